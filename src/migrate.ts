import { existsSync } from 'node:fs';
import { ConfigError, loadConfig } from './config.ts';
import { createDb } from './db/connect.ts';
import { migrateToLatest } from './db/migrate.ts';

if (existsSync('.env')) process.loadEnvFile('.env');
try {
  const config = loadConfig(process.env);
  const handle = createDb(config.database);
  try {
    const applied = await migrateToLatest(handle);
    console.log(applied.length > 0 ? `applied: ${applied.join(', ')}` : 'database is up to date');
  } finally {
    await handle.close();
  }
} catch (error) {
  if (error instanceof ConfigError) {
    for (const problem of error.problems) console.error(`gatehouse: configuration error: ${problem}`);
  } else {
    console.error(`gatehouse: migration failed: ${(error as Error).cause ?? error}`);
  }
  process.exitCode = 1;
}
