import { ForbiddenException, Inject, Injectable, type CanActivate, type ExecutionContext, type Type } from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';
import { isObservable, lastValueFrom } from 'rxjs';
import { INBOX_ADMIN_OPTIONS, type ResolvedAdminOptions } from './inbox-admin.options';

/** Methods that change nothing: the only ones a read-only console answers. */
const READING = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * The header every change must carry. A page of another site can make a browser send a form or a
 * simple request with the user's cookies, but not a custom header or a JSON content type without
 * a CORS preflight, which the console never answers: together they stop cross-site requests.
 */
export const CONSOLE_REQUEST_HEADER = 'x-inbox-console';

/** Runs the user's guards on every console route (all must pass), then refuses changes when read-only. */
@Injectable()
export class InboxAdminGuard implements CanActivate {
  private readonly resolved = new Map<Type<CanActivate>, Promise<CanActivate>>();

  constructor(
    @Inject(INBOX_ADMIN_OPTIONS) private readonly options: ResolvedAdminOptions,
    private readonly moduleRef: ModuleRef,
  ) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    const request = context.switchToHttp().getRequest<{ method: string; headers: Record<string, string | string[] | undefined> }>();
    const changes = !READING.has(request.method);
    if (changes && (request.headers[CONSOLE_REQUEST_HEADER] === undefined || !String(request.headers['content-type'] ?? '').startsWith('application/json'))) {
      throw new ForbiddenException(`A change needs a JSON body (Content-Type: application/json) and the ${CONSOLE_REQUEST_HEADER} header (cross-site request protection).`);
    }
    for (const configured of this.options.guards) {
      const guard = typeof configured === 'function' ? await this.instanceOf(configured) : configured;
      const verdict = guard.canActivate(context);
      const allowed = isObservable(verdict) ? await lastValueFrom(verdict) : await verdict;
      if (!allowed) return false;
    }
    if (this.options.readOnly && changes) {
      throw new ForbiddenException('The inbox console is read-only.');
    }
    return true;
  }

  /** A guard class: the application's instance when it provides one, else one made with the module's injector. */
  private instanceOf(type: Type<CanActivate>): Promise<CanActivate> {
    let instance = this.resolved.get(type);
    if (!instance) {
      instance = (async (): Promise<CanActivate> => {
        try {
          const provided = this.moduleRef.get(type, { strict: false });
          if (provided) return provided;
        } catch {
          // Not provided by the application: made below.
        }
        return this.moduleRef.create(type);
      })();
      this.resolved.set(type, instance);
    }
    return instance;
  }
}
