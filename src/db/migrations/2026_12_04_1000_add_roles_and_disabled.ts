import { type Kysely, sql } from 'kysely';

// biome-ignore lint/suspicious/noExplicitAny: migrations are frozen in time and must not follow src/ types.
type AnyDb = Kysely<any>;

// Roles are few and read with the user on every login, so a space-separated column rather than a join table.
// A disabled account keeps its rows (for the audit trail and to enable it again); the time says when and since when.
export async function up(db: AnyDb): Promise<void> {
  await sql`alter table users add column roles text not null default ''`.execute(db);
  await sql`alter table users add column disabled_at_ms bigint`.execute(db);
}

export async function down(db: AnyDb): Promise<void> {
  await sql`alter table users drop column disabled_at_ms`.execute(db);
  await sql`alter table users drop column roles`.execute(db);
}
