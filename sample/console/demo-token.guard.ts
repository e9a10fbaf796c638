import { Injectable, type CanActivate, type ExecutionContext } from '@nestjs/common';
import type { AdminRequest } from 'nestjs-inbox';

/** The token the console accepts: INBOX_ADMIN_TOKEN, or "demo" for the walkthrough. */
export const consoleToken = (): string => process.env.INBOX_ADMIN_TOKEN ?? 'demo';

/**
 * The sample's guard for the operator's console: a bearer token. A real application puts its own
 * authentication here (a session, an SSO group); the library only insists that there is one.
 */
@Injectable()
export class DemoTokenGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const request = context.switchToHttp().getRequest<AdminRequest>();
    return request.headers.authorization === `Bearer ${consoleToken()}`;
  }
}
