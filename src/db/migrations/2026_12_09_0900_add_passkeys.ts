import { type Kysely, sql } from 'kysely';

// biome-ignore lint/suspicious/noExplicitAny: migrations are frozen in time and must not follow src/ types.
type AnyDb = Kysely<any>;

// Passkeys (WebAuthn, issue 14).
// - users.webauthn_user_handle: the user.id authenticators store (64 random bytes, base64url; WebAuthn L3 §14.6.1:
//   no personal data in it). Null until the user first asks to register a passkey.
// - webauthn_credentials: one row per registered public key. credential_id is unique across users (L3 §7.1 step 22).
//   sign_count is the last signature counter accepted; suspect marks a credential whose counter went backwards (a
//   possible clone), refused from then on. Flags are integers 0/1 on both databases.
// - webauthn_challenges: each ceremony's challenge, bound to its purpose and (when known) user, spent by one UPDATE.
export async function up(db: AnyDb): Promise<void> {
  await sql`alter table users add column webauthn_user_handle text`.execute(db);
  await sql`create unique index users_webauthn_user_handle_key on users (webauthn_user_handle)`.execute(db);
  await sql`create table webauthn_credentials (
    id text primary key,
    user_id integer not null references users (id) on delete cascade,
    credential_id text not null,
    public_key text not null,
    sign_count bigint not null default 0,
    transports text not null default '',
    aaguid text not null,
    backup_eligible integer not null default 0,
    backup_state integer not null default 0,
    uv_initialized integer not null default 0,
    suspect integer not null default 0,
    name text not null,
    created_at_ms bigint not null,
    last_used_at_ms bigint
  )`.execute(db);
  await sql`create unique index webauthn_credentials_credential_id_key on webauthn_credentials (credential_id)`.execute(
    db,
  );
  await sql`create index webauthn_credentials_user_id_idx on webauthn_credentials (user_id)`.execute(db);
  await sql`create table webauthn_challenges (
    id text primary key,
    purpose text not null,
    user_id integer references users (id) on delete cascade,
    challenge text not null,
    created_at_ms bigint not null,
    expires_at_ms bigint not null,
    consumed_at_ms bigint
  )`.execute(db);
  await sql`create index webauthn_challenges_expires_at_ms_idx on webauthn_challenges (expires_at_ms)`.execute(
    db,
  );
  await sql`create index webauthn_challenges_user_id_idx on webauthn_challenges (user_id)`.execute(db);
}

export async function down(db: AnyDb): Promise<void> {
  await sql`drop table webauthn_challenges`.execute(db);
  await sql`drop table webauthn_credentials`.execute(db);
  await sql`drop index users_webauthn_user_handle_key`.execute(db);
  await sql`alter table users drop column webauthn_user_handle`.execute(db);
}
