import { type Kysely, sql } from 'kysely';

// biome-ignore lint/suspicious/noExplicitAny: migrations are frozen in time and must not follow src/ types.
type AnyDb = Kysely<any>;

// The addresses (IPv4, or an IPv6 prefix such as 2001:db8:1:2::/64) from which each user last logged in: login
// throttling trusts them, so that an attacker elsewhere cannot lock the user out.
export async function up(db: AnyDb): Promise<void> {
  await sql`create table known_ips (
    user_id integer not null references users (id) on delete cascade,
    ip text not null,
    last_success_at_ms bigint not null,
    primary key (user_id, ip)
  )`.execute(db);
}

export async function down(db: AnyDb): Promise<void> {
  await sql`drop table known_ips`.execute(db);
}
