import 'reflect-metadata';
import { Module, type INestApplicationContext } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { InboxEntry } from '../store/inbox-entry.entity';
import { InboxModule } from '../inbox.module';
import { InboxService } from '../receive/inbox.service';

@Module({})
class InboxCliModule {}

export interface CliApp {
  inbox: InboxService;
  close(): Promise<void>;
}

/**
 * A Nest application context with the library's own module, so the CLI goes through the same
 * validation, SQL and history records as an application. `worker: false`: it never claims
 * entries, needs no ScheduleModule, and accepts any command type (it has no handlers).
 */
export async function createCliApp(url: string, tableName: string): Promise<CliApp> {
  const app: INestApplicationContext = await NestFactory.createApplicationContext(
    {
      module: InboxCliModule,
      imports: [
        TypeOrmModule.forRoot({
          type: 'postgres',
          url,
          entities: [InboxEntry],
          retryAttempts: 0, // an operator wants the error now, not after ten retries
          installExtensions: false,
          logging: false,
          applicationName: 'nestjs-inbox-cli',
          extra: { connectionTimeoutMillis: 5000 },
        }),
        InboxModule.forRoot({ worker: false, acceptUnknownCommandTypes: true, tableName }),
      ],
    },
    // Silent, so stdout carries only the command's output; abortOnError would kill the process.
    { logger: false, abortOnError: false },
  );
  return { inbox: app.get(InboxService), close: () => app.close() };
}
