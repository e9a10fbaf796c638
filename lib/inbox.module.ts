import { Module, type DynamicModule, type Provider } from '@nestjs/common';
import { DiscoveryModule } from '@nestjs/core';
import { getDataSourceToken } from '@nestjs/typeorm';
import { InboxExplorer } from './discovery/inbox.explorer';
import { InboxListeners } from './discovery/inbox-listeners';
import { InboxHealth } from './health/inbox-health';
import { INBOX_DATA_SOURCE, INBOX_RESOLVED_OPTIONS, INBOX_TIMER_NAME } from './inbox.constants';
import {
  ConfigurableInboxModule,
  INBOX_ASYNC_OPTIONS_TYPE,
  INBOX_MODULE_OPTIONS,
  INBOX_OPTIONS_TYPE,
} from './inbox.module-definition';
import { resolveInboxOptions } from './inbox-options';
import { InboxConfigurationError } from './errors/inbox.error';
import type { InboxModuleExtras, InboxModuleOptions, ResolvedInboxOptions } from './interfaces/inbox-options.interface';
import { OutcomeWriter } from './outcomes/outcome-writer';
import { InboxService } from './receive/inbox.service';
import { Receiver } from './receive/receiver';
import { guardConnectionsOf } from './store/connection';
import { InboxStatements } from './store/statements';
import { InboxMetrics } from './telemetry/inbox-metrics';
import { InboxSnapshots } from './telemetry/inbox-snapshot';
import { InboxTracing } from './telemetry/inbox-tracing';
import { InboxNotifier } from './wake/notifier';
import { WakeSignal } from './wake/wake-signal';
import { BatchExecutor } from './worker/batch-executor';
import { WorkerConnections } from './worker/connections';
import { InboxProcessor } from './worker/inbox.processor';
import { LeaseRescuer } from './worker/lease-rescuer';
import { InboxRetention } from './worker/retention';
import { timerNameOf } from './worker/timer-name';
import { UnclaimedWarning } from './worker/unclaimed-warning';

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
      useFactory: (options: InboxModuleOptions | null | undefined) => {
        // forRoot() defaults to {}; a factory that returns nothing (a missing `return`) is a mistake.
        if (options === null || options === undefined) throw new InboxConfigurationError('InboxModule.forRootAsync: the factory returned no options object (return {} for the defaults)');
        return resolveInboxOptions(options);
      },
      inject: [INBOX_MODULE_OPTIONS],
    },
    // The application's data source, its pool's checked-out connections guarded against errors
    // that would otherwise go unhandled (a restarting server's, see guardCheckedOutClients).
    { provide: INBOX_DATA_SOURCE, useFactory: guardConnectionsOf, inject: [getDataSourceToken(extras.dataSource)] },
    // one worker loop per table and data source in an application
    { provide: INBOX_TIMER_NAME, useFactory: (options: ResolvedInboxOptions) => timerNameOf(options.tableName, extras.dataSource), inject: [INBOX_RESOLVED_OPTIONS] },
    // the SQL, written once for the table
    {
      provide: InboxStatements,
      useFactory: (options: ResolvedInboxOptions) => new InboxStatements(options.tableName, options.batchSize, options.attemptHistory, options.preparedStatements),
      inject: [INBOX_RESOLVED_OPTIONS],
    },
    // discovery
    InboxExplorer,
    InboxListeners,
    // receiving
    InboxService,
    Receiver,
    WakeSignal,
    InboxNotifier,
    // outcomes, written by the worker and by operators alike
    OutcomeWriter,
    // spans, metrics and the figures behind gauges and health checks
    InboxTracing,
    InboxMetrics,
    InboxSnapshots,
    InboxHealth,
    // the worker
    InboxProcessor,
    BatchExecutor,
    LeaseRescuer,
    UnclaimedWarning,
    WorkerConnections,
    InboxRetention,
  ];
  return {
    ...definition,
    imports: [...(definition.imports ?? []), DiscoveryModule],
    providers: [...(definition.providers ?? []), ...providers],
    exports: [...(definition.exports ?? []), InboxService, InboxProcessor, InboxRetention, InboxHealth, InboxSnapshots],
  };
}
