import type { Kysely } from 'kysely';

// biome-ignore lint/suspicious/noExplicitAny: migrations are frozen in time and must not follow src/ types.
type AnyDb = Kysely<any>;

// The refresh-token derivation key is derived from GATEHOUSE_SECRET from now on; the random one that was kept here in
// plain text would let a copy of the database derive successors, so it goes. Private signing keys are sealed by the
// application at start (sealSigningKeys), since only it holds the key-encryption key.
export async function up(db: AnyDb): Promise<void> {
  await db.deleteFrom('server_secrets').where('name', '=', 'refresh_token_derivation').execute();
}

export async function down(): Promise<void> {}
