import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The page's files, shipped beside this module (copied into dist by the build). */
const ASSET_DIR = join(__dirname, 'assets');

export type DashboardAsset = 'dashboard.js' | 'dashboard.css';

/**
 * Only what the page's own files need: scripts and styles from the console's origin, requests to
 * it; no inline script, no frames. A payload that slipped into the page as markup could not run.
 */
export const CONTENT_SECURITY_POLICY = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const cache = new Map<string, string>();

function read(name: string): string {
  let text = cache.get(name);
  if (text === undefined) {
    text = readFileSync(join(ASSET_DIR, name), 'utf8');
    cache.set(name, text);
  }
  return text;
}

/** The page, its links made absolute from the path it was asked for (global prefixes included). */
export function dashboardPage(requestPath: string): string {
  // The path alone: a request target in absolute form (`GET http://host/...`) must not move the page's links.
  const base = new URL(requestPath, 'http://console.invalid').pathname.replace(/\/+$/, '');
  return read('index.html').replaceAll('%BASE%', escapeAttribute(base));
}

export function dashboardAsset(name: DashboardAsset): string {
  return read(name);
}

function escapeAttribute(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
