// Starts the PostgreSQL server the e2e specs run against (embedded unless DATABASE_URL is set)
// and hands its URL to the test workers.
import { startPostgres } from '../../scripts/postgres.mjs';

export default async function globalSetup() {
  const server = await startPostgres('test');
  globalThis.__INBOX_TEST_POSTGRES__ = server;
  process.env.INBOX_TEST_ADMIN_URL = server.url;
}
