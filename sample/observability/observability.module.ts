import { Module } from '@nestjs/common';
import { TerminusModule } from '@nestjs/terminus';
import { InboxHealthIndicator } from 'nestjs-inbox/terminus';
import { ObservabilityController } from './observability.controller';
import { PrometheusMetrics } from './prometheus';

@Module({
  imports: [TerminusModule],
  controllers: [ObservabilityController],
  providers: [PrometheusMetrics, InboxHealthIndicator],
  exports: [PrometheusMetrics],
})
export class ObservabilityModule {}
