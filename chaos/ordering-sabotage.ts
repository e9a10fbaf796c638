// A deliberately broken inbox, for proving that the key checks can fail (CHAOS_BREAK_ORDERING=1;
// such a run must FAIL). It never touches the library: it drops the index that allows one holder
// per key and, every 100 ms, marks every waiting entry as not waiting, so the workers claim entries
// of a key side by side and out of order, as an inbox without ordering would.
import { setTimeout as sleep } from 'node:timers/promises';
import { Client } from 'pg';

/** Starts the sabotage; the returned function stops it. */
export async function breakOrdering(url: string, say: (message: string) => void): Promise<() => Promise<void>> {
  const client = new Client({ connectionString: url });
  await client.connect();
  const { rows } = await client.query<{ name: string }>(`SELECT indexname AS name FROM pg_indexes WHERE indexname LIKE '%key_holder%'`);
  for (const { name } of rows) await client.query(`DROP INDEX "${name}"`);
  await client.end();
  say(`CHAOS_BREAK_ORDERING: dropped ${rows.map((r) => r.name).join(', ') || 'no index'}; waiting entries are released every 100 ms`);
  let running = true;
  let released = 0;
  const loop = (async () => {
    while (running) {
      const c = new Client({ connectionString: url });
      try {
        await c.connect();
        released += (await c.query(`UPDATE inbox_entries SET waiting = false WHERE waiting`)).rowCount ?? 0;
      } catch {
        // the outage: the next round tries again
      } finally {
        await c.end().catch(() => undefined);
      }
      await sleep(100);
    }
  })();
  return async () => {
    running = false;
    await loop;
    say(`CHAOS_BREAK_ORDERING: ${released} waiting entries released`);
  };
}
