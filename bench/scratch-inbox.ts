// A scratch database beside DATABASE_URL's, migrated as an application would, for the tools that
// inspect the library's statements on a server (bench:wal, bench:plans); dropped afterwards.
import { Client } from 'pg';
import { migrateWithTypeOrm } from './systems/inbox-table';

export async function withScratchInbox(name: string, requirement: string, work: (client: Client) => Promise<void>): Promise<void> {
  const adminUrl = process.env.DATABASE_URL;
  if (!adminUrl) throw new Error(`set DATABASE_URL to ${requirement}`);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  const admin = new Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await admin.query(`CREATE DATABASE ${name}`);
  const client = new Client({ connectionString: url.toString() });
  try {
    await migrateWithTypeOrm(url.toString());
    await client.connect();
    await work(client);
  } finally {
    await client.end().catch(() => undefined);
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.end();
  }
}

/** Runs a tool's main, printing its failure and exiting non-zero. */
export function runTool(main: () => Promise<void>): void {
  main().catch((error: unknown) => {
    console.error(error);
    process.exit(1);
  });
}
