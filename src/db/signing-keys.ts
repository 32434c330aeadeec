import type { Db } from './schema.ts';

export interface StoredSigningKey {
  kid: string;
  algorithm: string;
  publicJwk: Record<string, unknown>;
  privateJwk: Record<string, unknown>;
  createdAt: Date;
}

export interface SigningKeysRepository {
  findActiveSigningKeys(algorithm: string): Promise<StoredSigningKey[]>;
  insertSigningKey(key: Omit<StoredSigningKey, 'createdAt'>, now: Date): Promise<void>;
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
      return rows.map((row) => ({
        kid: row.kid,
        algorithm: row.algorithm,
        publicJwk: JSON.parse(row.public_jwk),
        privateJwk: JSON.parse(row.private_jwk),
        createdAt: new Date(Number(row.created_at_ms)),
      }));
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
  };
}
