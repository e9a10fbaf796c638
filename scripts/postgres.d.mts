// Types of postgres.mjs for the TypeScript tools that import it (the chaos harness).
export interface PostgresHandle {
  /** Admin URL (database `postgres` of the embedded server, or DATABASE_URL as given). */
  url: string;
  embedded: boolean;
  stop(): Promise<void>;
  /** Stops and starts the server on the same port; `downtimeMs` applies to the embedded server. */
  restart(options?: { downtimeMs?: number }): Promise<void>;
}

export function startPostgres(name?: string, options?: { log?: (message: string) => void; fresh?: boolean }): Promise<PostgresHandle>;
