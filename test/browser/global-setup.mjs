// Browser tests need a Chromium to drive: say plainly what is missing before any test starts.
import { findChromium } from './chromium.mjs';
import startPostgres from '../support/global-setup.mjs';

export default async function globalSetup() {
  const chromium = findChromium();
  if (!chromium.path) {
    throw new Error(`\n\nThe browser tests need Chromium, and none was found (looked at: ${chromium.tried.join(', ')}).\n` +
      'On Debian or Ubuntu: apt-get update && apt-get install -y chromium\n' +
      'Elsewhere: install Chromium or Chrome and set CHROMIUM_PATH to its executable.\n');
  }
  process.env.INBOX_TEST_CHROMIUM = chromium.path;
  await startPostgres();
}
