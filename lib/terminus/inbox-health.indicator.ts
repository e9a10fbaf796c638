import { Injectable } from '@nestjs/common';
import { HealthIndicatorService, type HealthIndicatorResult } from '@nestjs/terminus';
import { InboxHealth, type InboxHealthThresholds } from '../health/inbox-health';

/**
 * The inbox as a @nestjs/terminus health indicator, in the style of Terminus's own: add it to the
 * providers of the module that holds your health controller (which imports `TerminusModule`) and
 * call `isHealthy('inbox', thresholds)` from `HealthCheckService.check([...])`. Up, degraded (new
 * dead letters above their threshold) or down, with the figures and, when not up, the reasons.
 */
@Injectable()
export class InboxHealthIndicator {
  constructor(
    private readonly indicators: HealthIndicatorService,
    private readonly inbox: InboxHealth,
  ) {}

  async isHealthy<const Key extends string = 'inbox'>(key: Key = 'inbox' as Key, thresholds: InboxHealthThresholds = {}): Promise<HealthIndicatorResult<Key>> {
    const session = this.indicators.check(key);
    const { status, problems, ...figures } = await this.inbox.check(thresholds);
    const details = problems.length > 0 ? { ...figures, reason: problems.join('; ') } : figures;
    if (status === 'up') return session.up(details);
    // Terminus 11 has no degraded state: there, degraded is reported as up, with its reason.
    if (status === 'degraded') return typeof session.degraded === 'function' ? session.degraded(details) : session.up(details);
    return session.down(details);
  }
}
