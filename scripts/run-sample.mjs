// Runs the bank sample (dist-sample/) against PostgreSQL: DATABASE_URL if set, else an embedded
// server in .data/postgres-sample (`--fresh`: its data deleted first). On a shutdown signal the
// Nest app closes first (its in-flight inbox handlers finish), then the embedded server stops,
// then the process exits.
import { createRequire } from 'node:module';
import { ShutdownSignal } from '@nestjs/common';
import { startSampleDatabase } from './sample-database.mjs';

const require = createRequire(import.meta.url);
const log = (message) => console.log(`[run-sample] ${message}`);

// The same signals app.enableShutdownHooks() listens to: Nest closes the app and then re-raises the
// signal, which must land here rather than kill the process before the database is stopped.
const SIGNALS = Object.values(ShutdownSignal);
const STOP_TIMEOUT_MS = 15_000;

let postgres;
let app;
let shuttingDown = false;
let starting = Promise.resolve();

for (const signal of SIGNALS) process.on(signal, () => void shutdown(signal));

async function stopPostgres() {
  if (!postgres) return;
  let timer;
  await Promise.race([
    postgres.stop(),
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`PostgreSQL did not stop within ${STOP_TIMEOUT_MS} ms`)), STOP_TIMEOUT_MS);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function shutdown(reason, exitCode = 0) {
  if (shuttingDown) return; // also swallows the signal Nest re-raises after closing the app
  shuttingDown = true;
  log(`${reason}: shutting down`);
  await starting.catch(() => undefined);
  try {
    // Joins the close that enableShutdownHooks() already started for this signal.
    await app?.close();
  } catch (error) {
    console.error('[run-sample] closing the app failed:', error);
    exitCode = 1;
  }
  try {
    await stopPostgres();
    if (postgres?.embedded) log('embedded PostgreSQL stopped');
  } catch (error) {
    console.error('[run-sample] stopping PostgreSQL failed:', error);
    exitCode = 1;
  }
  process.exit(exitCode);
}

async function start() {
  postgres = await startSampleDatabase({ fresh: process.argv.includes('--fresh'), log });
  process.env.DATABASE_URL = postgres.url;
  const { bootstrap } = require('../dist-sample/sample/main.js');
  app = await bootstrap();
}

starting = start();
starting.catch((error) => {
  // An EmbeddedPostgresError is one sentence that says what to do; anything else gets its stack.
  console.error('[run-sample] the sample failed to start:', error?.name === 'EmbeddedPostgresError' ? error.message : error);
  void shutdown('startup failure', 1);
});
