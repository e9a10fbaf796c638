import { Module, type DynamicModule, type ModuleMetadata } from '@nestjs/common';
import { adminController } from './inbox-admin.controller';
import { InboxAdminGuard } from './inbox-admin.guard';
import { dashboardController } from './inbox-dashboard.controller';
import { adminPath, INBOX_ADMIN_OPTIONS, resolveAdminOptions, type InboxAdminOptions } from './inbox-admin.options';

/** `registerAsync`: the path is fixed when the module is defined (routes are); the rest may come from a factory. */
export interface InboxAdminAsyncOptions extends Pick<ModuleMetadata, 'imports'> {
  path?: string;
  inject?: Array<string | symbol | Function>;
  useFactory: (...args: any[]) => InboxAdminOptions | Promise<InboxAdminOptions>;
}

/**
 * The operator's console: a JSON API (and its page) for dead letters, mounted in the application
 * under `path` (default `inbox-admin`), next to an `InboxModule` whose `InboxService` it uses.
 * Refuses to boot without guards unless `unprotected: true` says so.
 */
@Module({})
export class InboxAdminModule {
  static register(options: InboxAdminOptions & { path?: string }): DynamicModule {
    const path = adminPath(options?.path);
    const resolved = resolveAdminOptions(options);
    return {
      module: InboxAdminModule,
      controllers: [adminController(path), dashboardController(path)],
      providers: [{ provide: INBOX_ADMIN_OPTIONS, useValue: resolved }, InboxAdminGuard],
    };
  }

  static registerAsync(options: InboxAdminAsyncOptions): DynamicModule {
    const path = adminPath(options?.path);
    return {
      module: InboxAdminModule,
      imports: options.imports ?? [],
      controllers: [adminController(path), dashboardController(path)],
      providers: [
        { provide: INBOX_ADMIN_OPTIONS, inject: options.inject ?? [], useFactory: async (...args: unknown[]) => resolveAdminOptions(await options.useFactory(...args)) },
        InboxAdminGuard,
      ],
    };
  }
}
