import { Module } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { ScheduleModule } from '@nestjs/schedule';
import { TypeOrmModule } from '@nestjs/typeorm';
import { InboxEntry, InboxExceptionFilter, InboxMigration, InboxModule } from 'nestjs-inbox';
import { AccountEvent } from './bank/account-event.entity';
import { BankModule } from './bank/bank.module';
import { ConsoleModule } from './console/console.module';
import { CreateAccountEvents1764000100000 } from './bank/create-account-events.migration';
import { HttpExceptionFilter } from './http-exception.filter';
import { ObservabilityModule } from './observability/observability.module';
import { PrometheusMetrics } from './observability/prometheus';

function databaseUrl(): string {
  const url = process.env.DATABASE_URL;
  if (!url) {
    throw new Error('DATABASE_URL is not set. Start the sample with `npm start`, which provides a database, or set it yourself.');
  }
  return url;
}

@Module({
  imports: [
    // Read at boot, not at import, so that the URL can be set after this file is loaded.
    TypeOrmModule.forRootAsync({
      useFactory: () => ({
        type: 'postgres',
        url: databaseUrl(),
        entities: [InboxEntry, AccountEvent],
        migrations: [InboxMigration, CreateAccountEvents1764000100000],
        migrationsRun: true,
        synchronize: false,
        installExtensions: false,
        retryAttempts: 3,
        retryDelay: 1000,
      }),
    }),
    ScheduleModule.forRoot(),
    InboxModule.forRootAsync({
      imports: [ObservabilityModule],
      inject: [PrometheusMetrics],
      useFactory: (prometheus: PrometheusMetrics) => ({
        pollIntervalMs: 500,
        maxAttempts: 5,
        backoff: { initialDelayMs: 1000, multiplier: 2, maxDelayMs: 30_000, jitter: 0.2 },
        telemetry: { meterProvider: prometheus.meterProvider },
      }),
    }),
    ObservabilityModule,
    BankModule,
    ConsoleModule,
  ],
  providers: [
    { provide: APP_FILTER, useClass: InboxExceptionFilter },
    { provide: APP_FILTER, useClass: HttpExceptionFilter },
  ],
})
export class AppModule {}
