import { Controller, Get, Req, Res } from '@nestjs/common';
import { HealthCheck, HealthCheckService } from '@nestjs/terminus';
import type { Request, Response } from 'express';
import { InboxHealthIndicator } from 'nestjs-inbox/terminus';
import { PrometheusMetrics } from './prometheus';

/** What operators and their tools read: Prometheus metrics and a health check. */
@Controller()
export class ObservabilityController {
  constructor(
    private readonly prometheus: PrometheusMetrics,
    private readonly health: HealthCheckService,
    private readonly inbox: InboxHealthIndicator,
  ) {}

  /** Prometheus text format; the inbox's gauges come from its shared snapshot (one statement per 15 s for the fleet). */
  @Get('metrics')
  metrics(@Req() request: Request, @Res() response: Response): void {
    this.prometheus.exporter.getMetricsRequestHandler(request, response);
  }

  /** 200 while the inbox is healthy, 503 with the reasons when it is not. */
  @Get('health')
  @HealthCheck()
  check() {
    return this.health.check([() => this.inbox.isHealthy('inbox', { maxOldestDueAgeMs: 5 * 60_000, maxExpiredLeases: 0 })]);
  }
}
