import { type Kysely, sql } from 'kysely';

// biome-ignore lint/suspicious/noExplicitAny: migrations are frozen in time and must not follow src/ types.
type AnyDb = Kysely<any>;

export async function up(db: AnyDb): Promise<void> {
  await sql`create table sessions (
    id text primary key,
    user_id integer not null references users (id) on delete cascade,
    created_at_ms bigint not null,
    last_used_at_ms bigint not null,
    expires_at_ms bigint not null,
    revoked_at_ms bigint,
    revoked_reason text,
    user_agent text,
    ip_address text
  )`.execute(db);
  await sql`create index sessions_user_id_idx on sessions (user_id)`.execute(db);

  await sql`create table refresh_tokens (
    id text primary key,
    session_id text not null references sessions (id) on delete cascade,
    secret_hash text not null,
    parent_id text,
    created_at_ms bigint not null,
    used_at_ms bigint
  )`.execute(db);
  await sql`create index refresh_tokens_session_id_idx on refresh_tokens (session_id)`.execute(db);

  await sql`create table server_secrets (
    name text primary key,
    value text not null,
    created_at_ms bigint not null
  )`.execute(db);
}

export async function down(db: AnyDb): Promise<void> {
  for (const table of ['server_secrets', 'refresh_tokens', 'sessions']) {
    await sql`drop table ${sql.table(table)}`.execute(db);
  }
}
