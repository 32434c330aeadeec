import type { Config } from '../config.ts';
import { createDb, type DbHandle } from '../db/connect.ts';
import { migrateToLatest } from '../db/migrate.ts';
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
 */
export async function openDatabase(config: Config, warn: (line: string) => void): Promise<OpenedDatabase> {
  const handle = createDb(config.database);
  try {
    for (const warning of handle.warnings) warn(warning);
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
