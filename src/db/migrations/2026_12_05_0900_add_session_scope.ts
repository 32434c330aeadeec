import { type Kysely, sql } from 'kysely';

// biome-ignore lint/suspicious/noExplicitAny: migrations are frozen in time and must not follow src/ types.
type AnyDb = Kysely<any>;

// The scope a login granted, so that its refreshes grant no more (RFC 6749 §6). Sessions opened before scopes were
// split granted `conversation`, which is both conversation scopes: the default says so in today's names.
export async function up(db: AnyDb): Promise<void> {
  await sql`alter table sessions add column scope text not null default 'conversation:read conversation:write'`.execute(
    db,
  );
}

export async function down(db: AnyDb): Promise<void> {
  await sql`alter table sessions drop column scope`.execute(db);
}
