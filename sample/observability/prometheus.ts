import { Injectable, type OnApplicationShutdown } from '@nestjs/common';
import { PrometheusExporter } from '@opentelemetry/exporter-prometheus';
import { MeterProvider } from '@opentelemetry/sdk-metrics';

/**
 * The OpenTelemetry metrics SDK with a Prometheus exporter that serves no port of its own: the
 * app's `/metrics` route hands scrapes to it. The inbox is given this provider explicitly
 * (see AppModule), so no global state is needed.
 */
@Injectable()
export class PrometheusMetrics implements OnApplicationShutdown {
  readonly exporter = new PrometheusExporter({ preventServerStart: true });
  readonly meterProvider = new MeterProvider({ readers: [this.exporter] });

  async onApplicationShutdown(): Promise<void> {
    await this.meterProvider.shutdown();
  }
}
