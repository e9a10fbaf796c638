import { getDataSourceName } from '@nestjs/typeorm';
import type { DataSource } from 'typeorm';

/**
 * What a table's worker timer is called in @nestjs/schedule's SchedulerRegistry:
 * `nestjs-inbox:<table>`, and `nestjs-inbox:<table>@<data source>` on a data source other than the
 * default one. Two data sources may each hold a table of the same name, and each needs a loop of
 * its own; a second import of the module for the same table and data source finds the name taken
 * and leaves the work to the first. The data source is named as its injection token names it.
 */
export function timerNameOf(tableName: string, dataSource?: DataSource | string): string {
  const name = typeof dataSource === 'string' ? dataSource : getDataSourceName((dataSource?.options ?? {}) as { name?: string });
  return name === 'default' ? `nestjs-inbox:${tableName}` : `nestjs-inbox:${tableName}@${name}`;
}
