import type { Config } from '../config.ts';
import { createDb, type DbHandle } from '../db/connect.ts';
import { hasBeenMigrated, migrateToLatest } from '../db/migrate.ts';
import { createSigningKeysRepository } from '../db/signing-keys.ts';
import { createSecretBox } from '../security/secret-box.ts';
import { sealSigningKeys } from '../services/keys.ts';

export interface OpenedDatabase {
  handle: DbHandle;
  /** The migrations this call applied. */
  applied: string[];
}

/**
 * Opens the configured database and brings it up to date: migrations, then the private keys still stored in plain
 * text (from before encryption at rest) sealed with GATEHOUSE_SECRET. Whatever it mended or refused goes to `warn`.
 * With `existing`, a database no migration ever ran on is refused untouched: a command that reads or changes what a
 * Gatehouse database holds, pointed by a typo at another (empty) PostgreSQL database, made every table there.
 */
export async function openDatabase(
  config: Config,
  warn: (line: string) => void,
  options: { existing?: boolean } = {},
): Promise<OpenedDatabase> {
  const handle = createDb(config.database);
  try {
    for (const warning of handle.warnings) warn(warning);
    if (options.existing && !(await hasBeenMigrated(handle))) {
      throw new Error(
        'no Gatehouse database at DATABASE_URL (it holds no Gatehouse tables): check the URL; `gatehouse migrate` creates one there',
      );
    }
    const applied = await migrateToLatest(handle);
    const { sealed, planted } = await sealSigningKeys(
      createSigningKeysRepository(handle.db),
      createSecretBox(config.secrets),
      { reseal: false, now: new Date() },
    );
    if (sealed.length > 0) warn(`sealed ${sealed.length} private signing key(s) stored in plain text`);
    for (const kid of planted) {
      warn(`signing key ${kid} is stored in plain text, which Gatehouse never writes: it is not used`);
    }
    return { handle, applied };
  } catch (error) {
    await handle.close().catch(() => {});
    throw error;
  }
}
