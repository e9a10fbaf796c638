import { getMetadataArgsStorage } from 'typeorm';
import { InboxEntry } from '../../lib/store/inbox-entry.entity';
import { HISTORY_COLUMNS, INBOX_COLUMNS, SELECTED_COLUMNS, toEntry, type InboxRow } from '../../lib/store/schema';
import { inboxSchemaSql } from '../../lib/store/inbox.migration';

/** The entity's columns as its decorators declare them. */
function entityColumns(): Map<string, { property: string; nullable: boolean; type: unknown }> {
  const storage = getMetadataArgsStorage();
  const columns = new Map<string, { property: string; nullable: boolean; type: unknown }>();
  for (const column of storage.columns.filter((c) => c.target === InboxEntry)) {
    columns.set(column.options.name ?? column.propertyName, { property: column.propertyName, nullable: column.options.nullable === true, type: column.options.type });
  }
  for (const generated of storage.generations.filter((g) => g.target === InboxEntry)) {
    const column = columns.get(generated.propertyName);
    if (column) column.nullable = false;
  }
  return columns;
}

describe('the schema source', () => {
  it('is what the TypeORM entity maps, column for column, with the same nullability', () => {
    const entity = entityColumns();
    expect([...entity.keys()].sort()).toEqual(Object.keys(INBOX_COLUMNS).sort());
    for (const [name, spec] of Object.entries(INBOX_COLUMNS)) {
      const column = entity.get(name)!;
      expect({ name, nullable: column.nullable }).toEqual({ name, nullable: spec.nullable });
      if ('property' in spec) expect({ name, property: column.property }).toEqual({ name, property: spec.property });
    }
  });

  it('maps every selected column of a row onto the entity', () => {
    const row = Object.fromEntries(SELECTED_COLUMNS.map((name, i) => [name, `value-${i}`])) as unknown as InboxRow;
    const entry = toEntry(row) as unknown as Record<string, unknown>;
    for (const [i, name] of SELECTED_COLUMNS.entries()) {
      const spec = INBOX_COLUMNS[name];
      expect({ name, value: entry[spec.property] }).toEqual({ name, value: `value-${i}` });
    }
  });

  it('is what the migration creates, for both tables', () => {
    const ddl = inboxSchemaSql('inbox_entries').up.join('\n');
    for (const [name, spec] of [...Object.entries(INBOX_COLUMNS), ...Object.entries(HISTORY_COLUMNS)]) {
      const type = spec.type === 'status' ? '"inbox_status"' : spec.type;
      expect(ddl).toContain(`"${name}" ${type}${spec.nullable ? '' : ' NOT NULL'}`);
    }
  });
});
