import { type Kysely, sql } from 'kysely';

// biome-ignore lint/suspicious/noExplicitAny: migrations are frozen in time and must not follow src/ types.
type AnyDb = Kysely<any>;

/**
 * One row that readiness rewrites while SQLite's writes are failing (a full disk, a read-only file): the only way to
 * learn that they land again when no request writes, as none does while the balancer keeps the instance out.
 */
export async function up(db: AnyDb): Promise<void> {
  await sql`create table readiness_probe (
    id integer primary key,
    written_at_ms bigint not null
  )`.execute(db);
}

export async function down(db: AnyDb): Promise<void> {
  await sql`drop table readiness_probe`.execute(db);
}
