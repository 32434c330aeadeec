import type { Config } from '../config.ts';
import { createDb } from '../db/connect.ts';
import { migrateToLatest } from '../db/migrate.ts';

/** `npm run migrate`: applies pending migrations; returns the process exit code. */
export async function runMigrateCommand(config: Config, print: (line: string) => void): Promise<number> {
  const handle = createDb(config.database);
  try {
    const applied = await migrateToLatest(handle);
    print(applied.length > 0 ? `applied: ${applied.join(', ')}` : 'database is up to date');
    return 0;
  } finally {
    await handle.close();
  }
}
