import { ForbiddenException, Inject, Injectable, type CanActivate, type ExecutionContext, type Type } from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';
import { isObservable, lastValueFrom } from 'rxjs';
import { INBOX_ADMIN_OPTIONS, type ResolvedAdminOptions } from './inbox-admin.options';

/** Methods that change nothing: the only ones a read-only console answers. */
const READING = new Set(['GET', 'HEAD', 'OPTIONS']);

/** Runs the user's guards on every console route (all must pass), then refuses changes when read-only. */
@Injectable()
export class InboxAdminGuard implements CanActivate {
  private readonly resolved = new Map<Type<CanActivate>, Promise<CanActivate>>();

  constructor(
    @Inject(INBOX_ADMIN_OPTIONS) private readonly options: ResolvedAdminOptions,
    private readonly moduleRef: ModuleRef,
  ) {}

  async canActivate(context: ExecutionContext): Promise<boolean> {
    for (const configured of this.options.guards) {
      const guard = typeof configured === 'function' ? await this.instanceOf(configured) : configured;
      const verdict = guard.canActivate(context);
      const allowed = isObservable(verdict) ? await lastValueFrom(verdict) : await verdict;
      if (!allowed) return false;
    }
    if (this.options.readOnly && !READING.has(context.switchToHttp().getRequest<{ method: string }>().method)) {
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
