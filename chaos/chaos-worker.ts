// One chaos worker: a plain Nest application context that processes the inbox with the handlers
// of its release.
// Run: node -r ./scripts/register-ts.cjs chaos/chaos-worker.ts <database-url> <worker-name> '<json config>'
// Reports readiness (and its host clock) over the IPC channel the orchestrator opens; logs go to
// stdout/stderr.
import 'reflect-metadata';
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { ScheduleModule } from '@nestjs/schedule';
import { TypeOrmModule } from '@nestjs/typeorm';
import { InboxEntry, InboxModule } from '../lib';
import { WORKER_INBOX_OPTIONS, type ChaosWorkerConfig } from './chaos-commands';
import { handlersOf, WORKER_ID } from './chaos-handlers';

const [url, name, json] = process.argv.slice(2);
if (!url || !name || !json) throw new Error("usage: chaos-worker.ts <database-url> <worker-name> '<json config>'");
const config = JSON.parse(json) as ChaosWorkerConfig;
const workerId = `${name}-${process.pid}`;

@Module({
  imports: [
    TypeOrmModule.forRoot({
      type: 'postgres',
      url,
      // Lets the orchestrator see in pg_stat_activity when this process reconnects after a restart.
      applicationName: workerId,
      entities: [InboxEntry],
      // A worker restarted while PostgreSQL is down keeps trying instead of exiting.
      retryAttempts: 120,
      retryDelay: 500,
      logging: ['error'],
      ...(config.poolMax === undefined ? {} : { extra: { max: config.poolMax } }),
    }),
    ScheduleModule.forRoot(),
    InboxModule.forRoot({ ...WORKER_INBOX_OPTIONS, workerId }),
  ],
  providers: [{ provide: WORKER_ID, useValue: workerId }, ...handlersOf(config.release)],
})
class ChaosWorkerModule {}

async function main(): Promise<void> {
  const app = await NestFactory.createApplicationContext(ChaosWorkerModule, { logger: ['log', 'warn', 'error'] });
  app.enableShutdownHooks();
  console.log(`${workerId} ready (${config.release} release)`);
  // The host clock goes along, so the orchestrator can confirm a skew it asked for is in effect.
  // Disconnect after the message so the channel does not keep the process alive at shutdown.
  process.send?.({ ready: workerId, clock: Date.now() }, () => process.disconnect?.());
}

main().catch((error: unknown) => {
  console.error(`${workerId} failed to start:`, error);
  process.exit(1);
});
