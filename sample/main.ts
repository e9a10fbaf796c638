import 'reflect-metadata';
import { Logger } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
import { AppModule } from './app.module';
import { JSON_BODY_LIMIT } from './http-exception.filter';

function port(): number {
  const raw = process.env.PORT ?? '3000';
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0 || value > 65535) throw new Error(`PORT must be a port number, got "${raw}".`);
  return value;
}

/** Starts the bank API and returns the running application (the runner closes it on shutdown). */
export async function bootstrap(): Promise<NestExpressApplication> {
  // abortOnError: false makes a failed boot reject instead of exiting, so the runner can still stop its database.
  const app = await NestFactory.create<NestExpressApplication>(AppModule, { bodyParser: false, abortOnError: false });
  app.useBodyParser('json', { limit: JSON_BODY_LIMIT });
  app.enableShutdownHooks();
  try {
    await app.listen(port());
  } catch (error) {
    // listen() already started the inbox worker and the pool; release them before giving up.
    await app.close().catch(() => undefined);
    throw error;
  }
  Logger.log(`Bank sample listening on http://localhost:${port()}`, 'Bootstrap');
  return app;
}

if (require.main === module) {
  bootstrap().catch((error: unknown) => {
    Logger.error(error instanceof Error ? (error.stack ?? error.message) : String(error), undefined, 'Bootstrap');
    process.exit(1);
  });
}
