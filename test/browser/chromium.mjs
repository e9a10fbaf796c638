import { existsSync } from 'node:fs';

/** CHROMIUM_PATH, else Debian's package, else the usual places. */
export function findChromium() {
  const tried = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'].filter(Boolean);
  return { path: tried.find((candidate) => existsSync(candidate)), tried };
}
