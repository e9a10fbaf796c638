import { getDataSourceToken } from '@nestjs/typeorm';
import type { DataSource } from 'typeorm';

/** The suffix @nestjs/typeorm puts after a named data source's name in its injection token. */
const TOKEN_SUFFIX = 'DataSource';

/**
 * What a table's worker timer is called in @nestjs/schedule's SchedulerRegistry:
 * `nestjs-inbox:<table>`, and `nestjs-inbox:<table>@<data source>` on a data source other than the
 * default one. Two data sources may each hold a table of the same name, and each needs a loop of
 * its own; a second import of the module for the same table and data source finds the name taken
 * and leaves the work to the first. The data source is named as the token that injects it names it
 * (the default token is the DataSource class; a named one is `<name>DataSource`).
 */
export function timerNameOf(tableName: string, dataSource?: DataSource | string): string {
  const token = getDataSourceToken(dataSource);
  return typeof token === 'string' && token.endsWith(TOKEN_SUFFIX)
    ? `nestjs-inbox:${tableName}@${token.slice(0, -TOKEN_SUFFIX.length)}`
    : `nestjs-inbox:${tableName}`;
}
