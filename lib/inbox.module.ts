import { Module, type DynamicModule, type Provider } from '@nestjs/common';
import { DiscoveryModule } from '@nestjs/core';
import { getDataSourceToken } from '@nestjs/typeorm';
import { INBOX_DATA_SOURCE, INBOX_RESOLVED_OPTIONS } from './inbox.constants';
import { InboxEvents } from './inbox.events';
import { InboxExecutor } from './inbox.executor';
import { InboxExplorer } from './inbox.explorer';
import { InboxNotifier } from './inbox.notifier';
import {
  ConfigurableInboxModule,
  INBOX_ASYNC_OPTIONS_TYPE,
  INBOX_MODULE_OPTIONS,
  INBOX_OPTIONS_TYPE,
} from './inbox.module-definition';
import { resolveInboxOptions } from './inbox-options';
import { InboxProcessor } from './inbox.processor';
import { InboxRetention } from './inbox.retention';
import { InboxService } from './inbox.service';
import type { InboxModuleExtras, InboxModuleOptions } from './interfaces/inbox-options.interface';

/**
 * A durable command inbox. `forRoot(options)` / `forRootAsync({ useFactory, inject, imports })`;
 * `isGlobal` (default true) and `dataSource` are synchronous extras. The application must import
 * `TypeOrmModule.forRoot(...)` and, for workers, `ScheduleModule.forRoot()`.
 */
@Module({})
export class InboxModule extends ConfigurableInboxModule {
  static override forRoot(options: typeof INBOX_OPTIONS_TYPE = {}): DynamicModule {
    resolveInboxOptions(options); // fail at import, before anything connects
    return withInboxProviders(super.forRoot(options), options);
  }

  static override forRootAsync(options: typeof INBOX_ASYNC_OPTIONS_TYPE): DynamicModule {
    return withInboxProviders(super.forRootAsync(options), options);
  }
}

function withInboxProviders(definition: DynamicModule, extras: InboxModuleExtras): DynamicModule {
  const providers: Provider[] = [
    {
      provide: INBOX_RESOLVED_OPTIONS,
      useFactory: (options: InboxModuleOptions) => resolveInboxOptions(options),
      inject: [INBOX_MODULE_OPTIONS],
    },
    { provide: INBOX_DATA_SOURCE, useExisting: getDataSourceToken(extras.dataSource) },
    InboxEvents,
    InboxExecutor,
    InboxExplorer,
    InboxNotifier,
    InboxProcessor,
    InboxRetention,
    InboxService,
  ];
  return {
    ...definition,
    imports: [...(definition.imports ?? []), DiscoveryModule],
    providers: [...(definition.providers ?? []), ...providers],
    exports: [...(definition.exports ?? []), InboxService, InboxProcessor, InboxRetention],
  };
}
