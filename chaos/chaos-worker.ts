// One chaos worker: a plain Nest application context that processes the inbox.
// Run: node -r ./scripts/register-ts.cjs chaos/chaos-worker.ts <database-url> <worker-name>
// Reports readiness over the IPC channel the orchestrator opens; logs go to stdout/stderr.
import 'reflect-metadata';
import { writeSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Injectable, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { ScheduleModule } from '@nestjs/schedule';
import { TypeOrmModule } from '@nestjs/typeorm';
import { InboxEntry, InboxHandler, InboxModule, PermanentError, type InboxCommandHandler, type InboxContext } from '../lib';
import { ChaosCommand, PERMANENT_MESSAGE, POISON_MARKER, TRANSIENT_MESSAGE, WORKER_INBOX_OPTIONS } from './chaos-commands';

const [url, name] = process.argv.slice(2);
if (!url || !name) throw new Error('usage: chaos-worker.ts <database-url> <worker-name>');
const workerId = `${name}-${process.pid}`;

@Injectable()
@InboxHandler(ChaosCommand)
class ChaosHandler implements InboxCommandHandler<ChaosCommand> {
  async execute(command: ChaosCommand, { manager, entry }: InboxContext): Promise<void> {
    // Every kind writes its effect first: failures must roll it back, only completions keep it.
    await manager.query('INSERT INTO chaos_effects (message_id, amount, attempt, worker) VALUES ($1, $2, $3, $4)', [
      entry.messageId,
      command.amount,
      entry.attempt,
      workerId,
    ]);
    if (command.kind === 'poison') {
      // Synchronous, so the orchestrator finds the marker in the log when it sees the SIGKILL exit.
      writeSync(1, `${POISON_MARKER} ${entry.messageId} attempt ${entry.attempt}\n`);
      process.kill(process.pid, 'SIGKILL');
    }
    if (command.kind === 'permanent') throw new PermanentError(PERMANENT_MESSAGE);
    if (command.kind === 'transient' && entry.attempt <= command.failAttempts) {
      throw new Error(`${TRANSIENT_MESSAGE} (attempt ${entry.attempt} of ${command.failAttempts})`);
    }
    // A few ms inside the transaction, so that kills and the outage land mid-handler.
    await sleep(Math.random() * 4);
  }
}

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
    }),
    ScheduleModule.forRoot(),
    InboxModule.forRoot({ ...WORKER_INBOX_OPTIONS, workerId }),
  ],
  providers: [ChaosHandler],
})
class ChaosWorkerModule {}

async function main(): Promise<void> {
  const app = await NestFactory.createApplicationContext(ChaosWorkerModule, { logger: ['log', 'warn', 'error'] });
  app.enableShutdownHooks();
  console.log(`${workerId} ready`);
  // Disconnect after the message so the channel does not keep the process alive at shutdown.
  process.send?.({ ready: workerId }, () => process.disconnect?.());
}

main().catch((error: unknown) => {
  console.error(`${workerId} failed to start:`, error);
  process.exit(1);
});
