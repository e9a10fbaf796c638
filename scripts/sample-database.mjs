// The database the bank sample runs against, announced with a URL the operator CLI accepts.
import { startPostgres } from './postgres.mjs';

/**
 * DATABASE_URL if set, else the embedded server with the data of `name`; `fresh` starts the
 * embedded server with an empty data directory (the sample keeps its data between runs).
 */
export async function startSampleDatabase({ name = 'sample', fresh = false, log = console.log } = {}) {
  if (fresh && process.env.DATABASE_URL) log('--fresh applies to the embedded database only; DATABASE_URL is used as it is');
  const postgres = await startPostgres(name, { fresh });
  if (postgres.embedded) {
    // It listens on 127.0.0.1 only and its password is fixed: the URL hides nothing worth hiding.
    log(`embedded PostgreSQL ready at ${postgres.url}${fresh ? ' (fresh: the previous data was deleted)' : ''}`);
    log(`operator CLI, from another terminal: node dist/cli/main.js stats --database-url ${postgres.url}`);
  }
  return postgres;
}
