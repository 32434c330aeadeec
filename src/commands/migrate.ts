import type { Config } from '../config.ts';
import { createDb } from '../db/connect.ts';
import { migrateToLatest } from '../db/migrate.ts';
import { createSigningKeysRepository } from '../db/signing-keys.ts';
import { createSecretBox } from '../security/secret-box.ts';
import { sealSigningKeys } from '../services/keys.ts';

/** `npm run migrate`: applies pending migrations; returns the process exit code. */
export async function runMigrateCommand(config: Config, print: (line: string) => void): Promise<number> {
  const handle = createDb(config.database);
  try {
    for (const warning of handle.warnings) print(`warning: ${warning}`);
    const applied = await migrateToLatest(handle);
    print(applied.length > 0 ? `applied: ${applied.join(', ')}` : 'database is up to date');
    const { sealed } = await sealSigningKeys(
      createSigningKeysRepository(handle.db),
      createSecretBox(config.secrets),
      { reseal: false },
    );
    if (sealed.length > 0) print(`sealed ${sealed.length} private signing key(s) stored in plain text`);
    return 0;
  } finally {
    await handle.close();
  }
}
