import type { Db, SigningKeyRow } from './schema.ts';

export interface StoredSigningKey {
  kid: string;
  algorithm: string;
  publicJwk: Record<string, unknown>;
  privateJwk: Record<string, unknown>;
  createdAt: Date;
  retiredAt: Date | undefined;
}

export interface SigningKeysRepository {
  findActiveSigningKeys(algorithm: string): Promise<StoredSigningKey[]>;
  findAllSigningKeys(): Promise<StoredSigningKey[]>;
  insertSigningKey(key: Omit<StoredSigningKey, 'createdAt' | 'retiredAt'>, now: Date): Promise<void>;
  retireSigningKey(kid: string, now: Date): Promise<boolean>;
}

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
      await db
        .insertInto('signing_keys')
        .values({
          kid: key.kid,
          algorithm: key.algorithm,
          public_jwk: JSON.stringify(key.publicJwk),
          private_jwk: JSON.stringify(key.privateJwk),
          created_at_ms: now.getTime(),
          retired_at_ms: null,
        })
        .execute();
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

function toStoredKey(row: SigningKeyRow): StoredSigningKey {
  return {
    kid: row.kid,
    algorithm: row.algorithm,
    publicJwk: JSON.parse(row.public_jwk),
    privateJwk: JSON.parse(row.private_jwk),
    createdAt: new Date(Number(row.created_at_ms)),
    retiredAt: row.retired_at_ms === null ? undefined : new Date(Number(row.retired_at_ms)),
  };
}
