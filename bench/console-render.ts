import 'reflect-metadata';
import { existsSync, readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { join } from 'node:path';
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { ScheduleModule } from '@nestjs/schedule';
import { TypeOrmModule } from '@nestjs/typeorm';
import { chromium } from 'playwright-core';
import { InboxAdminModule, InboxEntry, InboxModule } from '../lib';
import { inboxSchemaSql } from '../lib/store/inbox.migration';
import { connectClient, createDatabase, dropDatabase } from './common';

// What the console's page weighs, and how long its main views take to show on a table of 100,000
// entries, in Chromium: `npm run bench:console` (DATABASE_URL: a server where a database
// `console_render` may be created and dropped; CHROMIUM_PATH or /usr/bin/chromium).
const ENTRIES = 100_000;
const RUNS = 7;
const DATABASE = 'console_render';

async function main() {
  const adminUrl = process.env.DATABASE_URL;
  if (!adminUrl) throw new Error('Set DATABASE_URL to a PostgreSQL server this script may create a database on.');
  const chromiumPath = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser'].find((path) => path && existsSync(path));
  if (!chromiumPath) throw new Error('No Chromium: apt-get install -y chromium, or set CHROMIUM_PATH.');

  const url = await createDatabase(adminUrl, DATABASE);
  const db = await connectClient(url);
  for (const statement of inboxSchemaSql().up) await db.query(statement);
  // 100,000 entries of 10 types: 90,000 completed, 5,000 pending, 1,000 failed, 4,000 dead letters
  // (in 40 groups: 10 types × 4 kinds of error, each with its account and amounts).
  await db.query(`INSERT INTO inbox_entries (message_id, command_type, payload, status, received_at, processed_at, next_retry_at, retry_count, error, dead_letter_reason, dead_lettered_at)
    SELECT 'm' || g, 'bank.type' || (g % 10), jsonb_build_object('accountId', 'acc-' || (g % 1000), 'amount', g),
      s.status::inbox_status, now() - (${ENTRIES} - g) * interval '100 ms',
      CASE WHEN s.status = 'completed' THEN now() - (${ENTRIES} - g) * interval '100 ms' + interval '5 ms' END,
      CASE WHEN s.status = 'failed' THEN now() + interval '1 minute' END,
      CASE WHEN s.status IN ('failed', 'dead_letter') THEN 1 ELSE 0 END,
      CASE WHEN s.status IN ('failed', 'dead_letter') THEN (ARRAY['Insufficient funds in acc-' || (g % 1000) || ': balance 0, withdrawal ' || g,
        'Account acc-' || (g % 1000) || ' does not exist.', 'Payment network unavailable (attempt ' || (g % 7) || ')', 'Timeout after ' || g || ' ms'])[1 + g % 4] END,
      CASE WHEN s.status = 'dead_letter' THEN 'permanent_error' END,
      CASE WHEN s.status = 'dead_letter' THEN now() - (${ENTRIES} - g) * interval '100 ms' END
    FROM generate_series(1, ${ENTRIES}) g
    CROSS JOIN LATERAL (SELECT CASE WHEN g % 100 < 90 THEN 'completed' WHEN g % 100 < 95 THEN 'pending' WHEN g % 100 < 96 THEN 'failed' ELSE 'dead_letter' END AS status) s`);
  await db.query('VACUUM ANALYZE inbox_entries');
  const { rows: [example] } = await db.query<{ id: string; account: string }>(`SELECT id, payload->>'accountId' AS account FROM inbox_entries WHERE status = 'dead_letter' ORDER BY received_at LIMIT 1`);
  await db.end();

  @Module({
    imports: [
      TypeOrmModule.forRoot({ type: 'postgres', url, entities: [InboxEntry], synchronize: false, logging: false }),
      ScheduleModule.forRoot(),
      InboxModule.forRoot({ worker: false, notify: false, acceptUnknownCommandTypes: true }),
      InboxAdminModule.register({ unprotected: true }),
    ],
  })
  class ConsoleBenchModule {}

  const app = await NestFactory.create(ConsoleBenchModule, { logger: false });
  await app.listen(0, '127.0.0.1');
  const base = `${await app.getUrl()}/inbox-admin`;
  const browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox'] });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });

  /** From navigation to the view's content on screen (median and slowest of RUNS, the first run apart). */
  async function measure(path: string, shown: string[]): Promise<{ first: number; median: number; max: number }> {
    const times: number[] = [];
    for (let run = 0; run <= RUNS; run++) {
      const started = performance.now();
      await page.goto(`${base}/${path}`);
      for (const selector of shown) await page.locator(selector).first().waitFor();
      times.push(performance.now() - started);
    }
    const [first, ...rest] = times;
    rest.sort((a, b) => a - b);
    return { first, median: rest[Math.floor(rest.length / 2)], max: rest[rest.length - 1] };
  }

  /** One API call, timed from this process (median of RUNS). */
  async function api(path: string): Promise<number> {
    const times: number[] = [];
    for (let run = 0; run < RUNS; run++) {
      const started = performance.now();
      const response = await fetch(`${base}/api/${path}`);
      await response.arrayBuffer();
      if (!response.ok) throw new Error(`${path}: ${response.status}`);
      times.push(performance.now() - started);
    }
    times.sort((a, b) => a - b);
    return times[Math.floor(times.length / 2)];
  }

  const { groups } = (await (await fetch(`${base}/api/dead-letter-groups`)).json()) as { groups: Array<{ commandType: string; fingerprint: string; count: number }> };
  const group = new URLSearchParams({ status: 'dead_letter', commandType: groups[0].commandType, errorFingerprint: groups[0].fingerprint });
  const views = [
    ['overview (tiles, 40 dead-letter groups, 50 newest entries)', '', ['#tiles .tile', '#groups tbody tr', '#entries tbody tr']],
    ['list filtered by status and a payload value', `?status=dead_letter&payload.accountId=${example.account}`, ['#entries tbody tr']],
    [`list of one dead-letter group (${groups[0].count} entries)`, `?${group}`, ['#entries tbody tr']],
    ['one entry with its timeline', `?entry=${example.id}`, ['#entry-payload:not(:empty)', '#entry-facts dd']],
  ] as const;
  console.log(`Console on ${ENTRIES.toLocaleString('en')} entries, Chromium ${browser.version()}; ms from navigation to content (median of ${RUNS} after a first run)`);
  console.log('| view | first | median | slowest |');
  console.log('| --- | --- | --- | --- |');
  for (const [name, path, shown] of views) {
    const { first, median, max } = await measure(path, [...shown]);
    console.log(`| ${name} | ${first.toFixed(0)} | ${median.toFixed(0)} | ${max.toFixed(0)} |`);
  }
  console.log('\n| API call | median ms |');
  console.log('| --- | --- |');
  for (const path of ['stats', 'dead-letter-groups', 'entries?limit=50', `entries?${group}&limit=50`, `entries?status=dead_letter&payload.accountId=${example.account}&limit=50`, `entries/${example.id}`]) {
    console.log(`| ${path.replace(example.id, '<id>').replace(example.account, '<account>').replace(String(group), 'status=dead_letter&commandType=…&errorFingerprint=…')} | ${(await api(path)).toFixed(1)} |`);
  }
  console.log('\n| asset | bytes | gzip |');
  console.log('| --- | --- | --- |');
  for (const name of ['index.html', 'dashboard.js', 'dashboard.css']) {
    const bytes = readFileSync(join(__dirname, '..', 'lib', 'admin', 'assets', name));
    console.log(`| ${name} | ${bytes.length} | ${gzipSync(bytes).length} |`);
  }

  await browser.close();
  await app.close();
  await dropDatabase(adminUrl, DATABASE);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
