import type { CanActivate, Type } from '@nestjs/common';
import { InboxConfigurationError } from '../errors/inbox.error';
import type { InboxEntry } from '../store/inbox-entry.entity';

export const INBOX_ADMIN_OPTIONS = Symbol('INBOX_ADMIN_OPTIONS');

/** The request as the admin options see it (Express or Fastify): whatever the user's guards attached. */
export type AdminRequest = Record<string, unknown> & { headers: Record<string, string | string[] | undefined> };

/** What the operator's console may do, and for whom. */
export interface InboxAdminOptions {
  /**
   * Guards every route of the console runs first, all of which must pass (classes are resolved
   * through the module's injector, instances used as they are). Without guards the module refuses
   * to boot unless `unprotected` is true.
   */
  guards?: Array<Type<CanActivate> | CanActivate>;
  /** Serve the console without guards: only behind something else that protects it. */
  unprotected?: boolean;
  /** Every change (replay, discard, dead-letter, bulk) answers 403; reading stays open. */
  readOnly?: boolean;
  /** Who acts, recorded in the history of every change; default "inbox-admin". */
  actor?: (request: AdminRequest) => string;
  /** Hides what an operator must not see: called on every entry (and every earlier payload) the console returns. */
  redact?: (entry: InboxEntry) => InboxEntry;
}

/** The options as the module runs them: every choice explicit. */
export interface ResolvedAdminOptions {
  guards: Array<Type<CanActivate> | CanActivate>;
  readOnly: boolean;
  actor: (request: AdminRequest) => string;
  redact: (entry: InboxEntry) => InboxEntry;
  /** Whether a `redact` was given. */
  redacts: boolean;
}

/** Checks the options at boot: a console nobody protects is refused unless asked for in so many words. */
export function resolveAdminOptions(options: InboxAdminOptions | undefined): ResolvedAdminOptions {
  if (typeof options !== 'object' || options === null) throw new InboxConfigurationError('InboxAdminModule: expected an options object');
  const guards = options.guards ?? [];
  if (!Array.isArray(guards) || guards.some((guard) => typeof guard !== 'function' && typeof (guard as CanActivate)?.canActivate !== 'function')) {
    throw new InboxConfigurationError('InboxAdminModule: guards must be guard classes or objects with canActivate()');
  }
  if (options.unprotected !== undefined && typeof options.unprotected !== 'boolean') throw new InboxConfigurationError('InboxAdminModule: unprotected must be true or false');
  if (guards.length === 0 && options.unprotected !== true) {
    throw new InboxConfigurationError(
      'InboxAdminModule: no guards given. The console replays and discards commands: protect it with `guards: [...]`, or say `unprotected: true` if something in front of it already does.',
    );
  }
  if (options.readOnly !== undefined && typeof options.readOnly !== 'boolean') throw new InboxConfigurationError('InboxAdminModule: readOnly must be true or false');
  for (const name of ['actor', 'redact'] as const) {
    if (options[name] !== undefined && typeof options[name] !== 'function') throw new InboxConfigurationError(`InboxAdminModule: ${name} must be a function`);
  }
  return {
    guards,
    readOnly: options.readOnly ?? false,
    actor: options.actor ?? (() => 'inbox-admin'),
    redact: options.redact ?? ((entry) => entry),
    redacts: options.redact !== undefined,
  };
}

/** The route prefix: a path of URL-safe segments, without leading or trailing slashes. */
export function adminPath(path: string | undefined): string {
  const value = path ?? 'inbox-admin';
  if (typeof value !== 'string' || !/^[A-Za-z0-9_~.-]+(\/[A-Za-z0-9_~.-]+)*$/.test(value.replace(/^\/+|\/+$/g, ''))) {
    throw new InboxConfigurationError(`InboxAdminModule: path must be URL segments such as "admin/inbox", got ${JSON.stringify(path)}`);
  }
  return value.replace(/^\/+|\/+$/g, '');
}
