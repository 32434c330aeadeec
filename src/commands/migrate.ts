import type { Config } from '../config.ts';
import { openDatabase } from './open-database.ts';

/** `npm run migrate`: applies pending migrations and seals keys left in plain text; returns the exit code. */
export async function runMigrateCommand(config: Config, print: (line: string) => void): Promise<number> {
  const { handle, applied } = await openDatabase(config, (line) => print(`warning: ${line}`));
  try {
    print(applied.length > 0 ? `applied: ${applied.join(', ')}` : 'database is up to date');
    return 0;
  } finally {
    await handle.close();
  }
}
