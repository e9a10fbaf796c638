import { getDataSourceToken } from '@nestjs/typeorm';
import { DataSource } from 'typeorm';
import { timerNameOf } from '../../lib/worker/timer-name';

describe('timerNameOf', () => {
  it('names the default data source by the table alone, another one by its name too', () => {
    expect(timerNameOf('inbox_entries')).toBe('nestjs-inbox:inbox_entries');
    expect(timerNameOf('inbox_entries', 'default')).toBe('nestjs-inbox:inbox_entries');
    expect(timerNameOf('inbox_entries', 'second')).toBe('nestjs-inbox:inbox_entries@second');
  });

  it('names a data source given as an instance as its injection token does', () => {
    // The options' name is not what @nestjs/typeorm reads from an instance: both are the default data source.
    const instance = new DataSource({ type: 'postgres', name: 'second' } as never);
    expect(getDataSourceToken(instance)).toBe(DataSource);
    expect(timerNameOf('inbox_entries', instance)).toBe('nestjs-inbox:inbox_entries');
  });
});
