import { type Kysely, sql } from 'kysely';

// biome-ignore lint/suspicious/noExplicitAny: migrations are frozen in time and must not follow src/ types.
type AnyDb = Kysely<any>;

// Bound into every device token: raising it (a password change, signing out everywhere) makes the user's earlier
// device tokens worthless, since they are not stored anywhere to be deleted.
export async function up(db: AnyDb): Promise<void> {
  await sql`alter table users add column trust_generation integer not null default 0`.execute(db);
}

export async function down(db: AnyDb): Promise<void> {
  await sql`alter table users drop column trust_generation`.execute(db);
}
