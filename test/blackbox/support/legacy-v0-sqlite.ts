/**
 * A SQLite database as the product wrote it BEFORE the hardening issue (plaintext signing_keys.private_jwk and
 * server_secrets, no username skeleton), dumped as SQL: tests build it in a temp directory and start the current
 * product on it to check the migrations. The private key below is a throw-away test fixture.
 */
import { DatabaseSync } from 'node:sqlite';

export const LEGACY_USER = {
  username: 'LegacyAlice',
  email: 'legacy.alice@example.com',
  password: 'legacy fixture password 0042',
};
export const LEGACY_KID = '0393cfd4-365d-4fbe-99ee-10db296560d0';
export const LEGACY_PRIVATE_D = '559J0r0d9MmYSFeowiVnA8MFNtPZG2G1_iuNwmdsGp0';
export const LEGACY_REFRESH_KEY = 'KoDv_aedEt2lBg6L20iL5cXuBD3SbZJG-ltlU4hg9GI';

const LEGACY_SQL: string[] = [
  'CREATE TABLE "kysely_migration" ("name" varchar(255) not null primary key, "timestamp" varchar(255) not null)',
  'CREATE TABLE "kysely_migration_lock" ("id" varchar(255) not null primary key, "is_locked" integer default 0 not null)',
  "CREATE TABLE users (\n    id integer primary key autoincrement,\n    username text not null,\n    username_canonical text not null,\n    email text not null,\n    email_canonical text not null,\n    password_hash text not null,\n    age integer not null check (age between 0 and 150),\n    level text not null check (level in ('beginner', 'intermediate', 'advanced')),\n    created_at_ms bigint not null,\n    updated_at_ms bigint not null\n  )",
  'CREATE TABLE conversations (\n    id integer primary key autoincrement,\n    user_id integer not null references users (id) on delete cascade,\n    created_at_ms bigint not null\n  )',
  "CREATE TABLE messages (\n    id integer primary key autoincrement,\n    conversation_id integer not null references conversations (id) on delete cascade,\n    author text not null check (author in ('system', 'user')),\n    body text not null,\n    created_at_ms bigint not null\n  )",
  'CREATE TABLE signing_keys (\n    kid text primary key,\n    algorithm text not null,\n    public_jwk text not null,\n    private_jwk text not null,\n    created_at_ms bigint not null,\n    retired_at_ms bigint\n  )',
  'CREATE TABLE sessions (\n    id text primary key,\n    user_id integer not null references users (id) on delete cascade,\n    created_at_ms bigint not null,\n    last_used_at_ms bigint not null,\n    expires_at_ms bigint not null,\n    revoked_at_ms bigint,\n    revoked_reason text,\n    user_agent text,\n    ip_address text\n  )',
  'CREATE TABLE refresh_tokens (\n    id text primary key,\n    session_id text not null references sessions (id) on delete cascade,\n    secret_hash text not null,\n    parent_id text,\n    created_at_ms bigint not null,\n    used_at_ms bigint\n  )',
  'CREATE TABLE server_secrets (\n    name text primary key,\n    value text not null,\n    created_at_ms bigint not null\n  )',
  'CREATE UNIQUE INDEX users_username_canonical_key on users (username_canonical)',
  'CREATE UNIQUE INDEX users_email_canonical_key on users (email_canonical)',
  'CREATE UNIQUE INDEX conversations_user_id_key on conversations (user_id)',
  'CREATE INDEX messages_conversation_id_idx on messages (conversation_id, id)',
  'CREATE INDEX sessions_user_id_idx on sessions (user_id)',
  'CREATE INDEX refresh_tokens_session_id_idx on refresh_tokens (session_id)',
  'INSERT INTO "kysely_migration" ("name","timestamp") VALUES (\'2026_11_25_2100_create_core_tables\',\'2026-11-30T09:17:18.561Z\')',
  'INSERT INTO "kysely_migration" ("name","timestamp") VALUES (\'2026_11_25_2200_create_sessions\',\'2026-11-30T09:17:18.573Z\')',
  'INSERT INTO "kysely_migration_lock" ("id","is_locked") VALUES (\'migration_lock\',0)',
  'INSERT INTO "users" ("id","username","username_canonical","email","email_canonical","password_hash","age","level","created_at_ms","updated_at_ms") VALUES (1,\'LegacyAlice\',\'legacyalice\',\'legacy.alice@example.com\',\'legacy.alice@example.com\',\'$argon2id$v=19$m=1024,t=1,p=1$n66Hjkaw6MtzWhgKiulyVQ$KSYooKzQSPKSD0p54w7cFow49bm7FM0rvH7Itnw0iu0\',40,\'advanced\',1796030240022,1796030240022)',
  'INSERT INTO "conversations" ("id","user_id","created_at_ms") VALUES (1,1,1796030240022)',
  'INSERT INTO "messages" ("id","conversation_id","author","body","created_at_ms") VALUES (1,1,\'system\',\'This is a secure conversation\',1796030240022)',
  'INSERT INTO "signing_keys" ("kid","algorithm","public_jwk","private_jwk","created_at_ms","retired_at_ms") VALUES (\'0393cfd4-365d-4fbe-99ee-10db296560d0\',\'EdDSA\',\'{"crv":"Ed25519","x":"hIflUCjYrLwC-QBxsnqkuq926-Kkcjrzhj81ExzAI98","kty":"OKP"}\',\'{"crv":"Ed25519","d":"559J0r0d9MmYSFeowiVnA8MFNtPZG2G1_iuNwmdsGp0","x":"hIflUCjYrLwC-QBxsnqkuq926-Kkcjrzhj81ExzAI98","kty":"OKP"}\',1796030238830,NULL)',
  'INSERT INTO "server_secrets" ("name","value","created_at_ms") VALUES (\'first_signing_key_EdDSA\',\'0393cfd4-365d-4fbe-99ee-10db296560d0\',1796030238830)',
  'INSERT INTO "server_secrets" ("name","value","created_at_ms") VALUES (\'refresh_token_derivation\',\'KoDv_aedEt2lBg6L20iL5cXuBD3SbZJG-ltlU4hg9GI\',1796030238834)',
];

/** Writes the legacy database to file (which must not exist). */
export function writeLegacySqlite(file: string): void {
  const db = new DatabaseSync(file);
  try {
    for (const stmt of LEGACY_SQL) db.exec(stmt);
  } finally {
    db.close();
  }
}
