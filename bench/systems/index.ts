import type { SystemName } from '../common';
import type { SystemAdapter } from './types';

/** Requires a system's module on demand, so a child process loads only the system it runs. */
export function loadAdapter(name: SystemName): SystemAdapter {
  switch (name) {
    case 'nestjs-inbox':
      return (require('./inbox') as typeof import('./inbox')).inboxAdapter;
    case 'pg-boss':
      return (require('./pg-boss') as typeof import('./pg-boss')).pgBossAdapter;
    case 'graphile-worker':
      return (require('./graphile-worker') as typeof import('./graphile-worker')).graphileWorkerAdapter;
    case 'raw-pg':
      return (require('./raw-pg') as typeof import('./raw-pg')).rawPgAdapter;
    default:
      throw new Error(`unknown system "${String(name)}"`);
  }
}
