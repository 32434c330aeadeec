import type { Db, SigningKeyRow } from './schema.ts';

export interface StoredSigningKey {
  kid: string;
  algorithm: string;
  publicJwk: Record<string, unknown>;
  /** The private JWK sealed by the service (rows from before encryption hold it as plain JSON). */
  sealedPrivateJwk: string;
  createdAt: Date;
  retiredAt: Date | undefined;
}

export interface SigningKeysRepository {
  findActiveSigningKeys(algorithm: string): Promise<StoredSigningKey[]>;
  findAllSigningKeys(): Promise<StoredSigningKey[]>;
  insertSigningKey(key: Omit<StoredSigningKey, 'createdAt' | 'retiredAt'>, now: Date): Promise<void>;
  /** Stores the key only if no active key of its algorithm exists, serialised across instances. */
  insertFirstSigningKey(key: Omit<StoredSigningKey, 'createdAt' | 'retiredAt'>, now: Date): Promise<void>;
  retireSigningKey(kid: string, now: Date): Promise<boolean>;
  /** Records that the keys stored in plain text before encryption were sealed: none may appear after that. */
  markPlaintextKeysSealed(now: Date): Promise<void>;
  werePlaintextKeysSealed(): Promise<boolean>;
  /** Replaces the stored private key only if it is still `expected`; true if replaced. */
  replaceSealedPrivateJwk(kid: string, expected: string, sealed: string): Promise<boolean>;
}

const PLAINTEXT_KEYS_SEALED = 'plaintext_signing_keys_sealed';

export function createSigningKeysRepository(db: Db): SigningKeysRepository {
  return {
    async findActiveSigningKeys(algorithm) {
      const rows = await db
        .selectFrom('signing_keys')
        .selectAll()
        .where('algorithm', '=', algorithm)
        .where('retired_at_ms', 'is', null)
        .orderBy('created_at_ms', 'desc')
        .orderBy('kid')
        .execute();
      return rows.map(toStoredKey);
    },

    async findAllSigningKeys() {
      const rows = await db.selectFrom('signing_keys').selectAll().orderBy('created_at_ms', 'desc').execute();
      return rows.map(toStoredKey);
    },

    async insertSigningKey(key, now) {
      await db.insertInto('signing_keys').values(toSigningKeyRow(key, now)).execute();
    },

    async insertFirstSigningKey(key, now) {
      await db.transaction().execute(async (trx) => {
        // A write first: it takes SQLite's write lock at once, and on PostgreSQL a concurrent insert of the same
        // row waits for this transaction. Instances starting together therefore create one key between them.
        await trx
          .insertInto('server_secrets')
          .values({
            name: `first_signing_key_${key.algorithm}`,
            value: key.kid,
            created_at_ms: now.getTime(),
          })
          .onConflict((conflict) => conflict.column('name').doNothing())
          .execute();
        const existing = await trx
          .selectFrom('signing_keys')
          .select('kid')
          .where('algorithm', '=', key.algorithm)
          .where('retired_at_ms', 'is', null)
          .executeTakeFirst();
        if (existing) return;
        await trx.insertInto('signing_keys').values(toSigningKeyRow(key, now)).execute();
      });
    },

    async markPlaintextKeysSealed(now) {
      await db
        .insertInto('server_secrets')
        .values({ name: PLAINTEXT_KEYS_SEALED, value: 'true', created_at_ms: now.getTime() })
        .onConflict((conflict) => conflict.column('name').doNothing())
        .execute();
    },

    async werePlaintextKeysSealed() {
      const row = await db
        .selectFrom('server_secrets')
        .select('name')
        .where('name', '=', PLAINTEXT_KEYS_SEALED)
        .executeTakeFirst();
      return row !== undefined;
    },

    async replaceSealedPrivateJwk(kid, expected, sealed) {
      const result = await db
        .updateTable('signing_keys')
        .set({ private_jwk: sealed })
        .where('kid', '=', kid)
        .where('private_jwk', '=', expected)
        .executeTakeFirst();
      return Number(result.numUpdatedRows) === 1;
    },

    async retireSigningKey(kid, now) {
      const result = await db
        .updateTable('signing_keys')
        .set({ retired_at_ms: now.getTime() })
        .where('kid', '=', kid)
        .where('retired_at_ms', 'is', null)
        .executeTakeFirst();
      return Number(result.numUpdatedRows) === 1;
    },
  };
}

function toSigningKeyRow(key: Omit<StoredSigningKey, 'createdAt' | 'retiredAt'>, now: Date): SigningKeyRow {
  return {
    kid: key.kid,
    algorithm: key.algorithm,
    public_jwk: JSON.stringify(key.publicJwk),
    private_jwk: key.sealedPrivateJwk,
    created_at_ms: now.getTime(),
    retired_at_ms: null,
  };
}

function toStoredKey(row: SigningKeyRow): StoredSigningKey {
  return {
    kid: row.kid,
    algorithm: row.algorithm,
    publicJwk: JSON.parse(row.public_jwk),
    sealedPrivateJwk: row.private_jwk,
    createdAt: new Date(Number(row.created_at_ms)),
    retiredAt: row.retired_at_ms === null ? undefined : new Date(Number(row.retired_at_ms)),
  };
}
