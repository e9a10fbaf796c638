import 'reflect-metadata';
import { Injectable } from '@nestjs/common';
import { InboxHandler, type InboxCommandHandler, type InboxContext } from 'nestjs-inbox';
import { createTestApp } from './test/support/test-app';
import { Client } from 'pg';
import { DataSource } from 'typeorm';

@Injectable()
@InboxHandler('slow', { orderingKey: (c: { k: string }) => c.k })
class Slow implements InboxCommandHandler<{ k: string }> {
  async execute(_c: { k: string }, ctx: InboxContext): Promise<void> {
    await new Promise((r) => setTimeout(r, 2));
    await ctx.manager.query('SELECT 1');
  }
}

async function floor(url: string, keys: number, each: number) {
  const ds = await new DataSource({ type: 'postgres', url, extra: { max: keys } }).initialize();
  const t0 = performance.now();
  await Promise.all(Array.from({ length: keys }, async () => {
    const r = ds.createQueryRunner(); await r.startTransaction();
    for (let i = 0; i < each; i++) { await new Promise((res) => setTimeout(res, 2)); await r.manager.query('SELECT 1'); if (i % 100 === 99) { await r.commitTransaction(); await r.startTransaction(); } }
    await r.commitTransaction(); await r.release();
  }));
  const rate = (keys * each) / (performance.now() - t0) * 1000; await ds.destroy(); return rate;
}

async function main() {
  const admin = new Client({ connectionString: 'postgres://postgres@127.0.0.1:5432/test' });
  await admin.connect();
  await admin.query('DROP DATABASE IF EXISTS slow_probe'); await admin.query('CREATE DATABASE slow_probe'); await admin.end();
  const url = 'postgres://postgres@127.0.0.1:5432/slow_probe';
  const rx = await createTestApp({ url, handlers: [Slow], inbox: { worker: false, notify: false } });
  const n = Number(process.argv[2] ?? 3000);
  const calls: Promise<unknown>[] = [];
  for (let i = 0; i < n; i++) { calls.push(rx.inbox.receive({ messageId: `m${i}`, commandType: 'slow', payload: { k: `k${i % 10}` } })); if (calls.length > 50) await Promise.all(calls.splice(0)); }
  await Promise.all(calls);
  await rx.close();
  const wk = await createTestApp({ url, handlers: [Slow], inbox: { notify: false, concurrency: 10, batchSize: 100, pollIntervalMs: 100 }, typeorm: { extra: { max: 14 } } });
  const c = new Client({ connectionString: url }); await c.connect();
  const t0 = Date.now();
  for (;;) {
    const { rows } = await c.query(`SELECT count(*)::int AS n FROM inbox_entries WHERE status <> 'completed'`);
    if (rows[0].n === 0) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  const ms = Date.now() - t0;
  console.log(`inbox ${n} in ${ms} ms: ${Math.round(n / ms * 1000)}/s`);
  await c.end(); await wk.close();
  console.log(`floor ${Math.round(await floor(url, 10, n / 10))}/s`);
}
main();
