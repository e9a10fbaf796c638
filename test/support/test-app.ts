import type { DynamicModule, LoggerService, ModuleMetadata, Provider, Type } from '@nestjs/common';
import { ScheduleModule } from '@nestjs/schedule';
import { Test, type TestingModule } from '@nestjs/testing';
import { TypeOrmModule } from '@nestjs/typeorm';
import { DataSource } from 'typeorm';
import { InboxEntry, InboxMigration, InboxModule, InboxProcessor, InboxService, type InboxModuleOptions } from 'nestjs-inbox';

export interface TestAppOptions {
  url: string;
  handlers?: Provider[];
  inbox?: InboxModuleOptions;
  /** Extra imports (e.g. a second InboxModule). */
  imports?: ModuleMetadata['imports'];
  /** Leave out ScheduleModule.forRoot() to see the library's error. */
  withoutSchedule?: boolean;
  /** Replace the InboxModule import entirely. */
  inboxModule?: DynamicModule;
  /** Receives every log line of the application (see CaptureLogger). */
  logger?: LoggerService;
  /** Extra TypeORM data source options (e.g. `extra: { max: 2 }` for a small pool). */
  typeorm?: Record<string, unknown>;
}

export interface TestApp {
  module: TestingModule;
  inbox: InboxService;
  processor: InboxProcessor;
  dataSource: DataSource;
  get<T>(type: Type<T>): T;
  close(): Promise<void>;
}

/**
 * The TypeORM connection every test app uses: the shipped migration, no synchronize. Data sources
 * are collected so that a module that fails to compile (and so cannot be closed) still frees them.
 */
export function typeOrmForTests(url: string, created: Array<Promise<DataSource>> = [], extra: Record<string, unknown> = {}): DynamicModule {
  return TypeOrmModule.forRootAsync({
    useFactory: () => ({
      type: 'postgres',
      url,
      entities: [InboxEntry],
      migrations: [InboxMigration],
      migrationsRun: true,
      synchronize: false,
      installExtensions: false, // gen_random_uuid() is built in since PostgreSQL 13
      retryAttempts: 0,
      logging: false,
      ...extra,
    }),
    dataSourceFactory: async (options) => {
      const initializing = new DataSource(options!).initialize();
      created.push(initializing);
      return initializing;
    },
  });
}

/** Compiles and initialises a Nest application context (bootstrap hooks included). */
export async function createTestApp(options: TestAppOptions): Promise<TestApp> {
  const dataSources: Array<Promise<DataSource>> = [];
  const builder = Test.createTestingModule({
    imports: [
      typeOrmForTests(options.url, dataSources, options.typeorm),
      ...(options.withoutSchedule ? [] : [ScheduleModule.forRoot()]),
      options.inboxModule ?? InboxModule.forRoot({ pollIntervalMs: 60_000, ...options.inbox }),
      ...(options.imports ?? []),
    ],
    providers: options.handlers ?? [],
  });
  if (options.logger) builder.setLogger(options.logger);
  const compiling = builder.compile();
  const module = await compiling.catch(async (error: unknown) => {
    // Compilation can fail while a data source is still connecting: let it finish, then close it.
    await Promise.all(dataSources.map((initializing) => initializing.then((dataSource) => dataSource.destroy()).catch(() => undefined)));
    throw error;
  });
  try {
    await module.init();
  } catch (error) {
    await module.close().catch(() => undefined);
    throw error;
  }
  return {
    module,
    inbox: module.get(InboxService),
    processor: module.get(InboxProcessor),
    dataSource: module.get(DataSource),
    get: <T>(type: Type<T>) => module.get(type),
    close: () => module.close(),
  };
}

/** Polls `probe` until it returns a truthy value or the deadline passes. */
export async function waitFor<T>(probe: () => Promise<T> | T, description: string, timeoutMs = 15_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${description}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A clock the test moves by hand. */
export class ManualClock {
  constructor(private current = new Date()) {}
  now(): Date {
    return new Date(this.current.getTime());
  }
  advance(ms: number): void {
    this.current = new Date(this.current.getTime() + ms);
  }
}
