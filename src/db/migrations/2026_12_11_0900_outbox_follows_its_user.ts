import { type Kysely, PostgresAdapter, sql } from 'kysely';

// biome-ignore lint/suspicious/noExplicitAny: migrations are frozen in time and must not follow src/ types.
type AnyDb = Kysely<any>;

/**
 * A deleted account's mails go with it (ON DELETE CASCADE, where it was SET NULL): none may be sent about an account
 * that is gone, nor its address kept. Deleting them first in the deletion's transaction was not enough on PostgreSQL:
 * a mail queued by another transaction between the two statements stayed, its user_id set to null. The indexes serve
 * that deletion and the outbox's pruning by age.
 */
export async function up(db: AnyDb): Promise<void> {
  if (db.getExecutor().adapter instanceof PostgresAdapter) {
    await sql`alter table email_outbox drop constraint email_outbox_user_id_fkey`.execute(db);
    await sql`alter table email_outbox add constraint email_outbox_user_id_fkey
      foreign key (user_id) references users (id) on delete cascade`.execute(db);
    await createIndexes(db);
    return;
  }
  // SQLite cannot change a foreign key in place: the table is made again with it, in one transaction.
  if (db.isTransaction) await rebuildSqliteOutbox(db, 'cascade');
  else await db.transaction().execute((trx) => rebuildSqliteOutbox(trx, 'cascade'));
}

export async function down(db: AnyDb): Promise<void> {
  await sql`drop index email_outbox_user_id_idx`.execute(db);
  await sql`drop index email_outbox_created_at_ms_idx`.execute(db);
  if (db.getExecutor().adapter instanceof PostgresAdapter) {
    await sql`alter table email_outbox drop constraint email_outbox_user_id_fkey`.execute(db);
    await sql`alter table email_outbox add constraint email_outbox_user_id_fkey
      foreign key (user_id) references users (id) on delete set null`.execute(db);
    return;
  }
  if (db.isTransaction) await rebuildSqliteOutbox(db, 'set null', false);
  else await db.transaction().execute((trx) => rebuildSqliteOutbox(trx, 'set null', false));
}

async function rebuildSqliteOutbox(
  db: AnyDb,
  onDelete: 'cascade' | 'set null',
  indexes = true,
): Promise<void> {
  await sql`create table email_outbox_rebuilt (
    id integer primary key autoincrement,
    user_id integer references users (id) on delete ${sql.raw(onDelete)},
    recipient text not null,
    template text not null,
    payload text,
    created_at_ms bigint not null,
    send_after_ms bigint not null,
    attempts integer not null default 0,
    last_error text,
    claimed_until_ms bigint,
    sent_at_ms bigint
  )`.execute(db);
  await sql`insert into email_outbox_rebuilt (id, user_id, recipient, template, payload, created_at_ms, send_after_ms,
    attempts, last_error, claimed_until_ms, sent_at_ms)
    select id, user_id, recipient, template, payload, created_at_ms, send_after_ms, attempts, last_error,
      claimed_until_ms, sent_at_ms from email_outbox`.execute(db);
  await sql`drop table email_outbox`.execute(db);
  await sql`alter table email_outbox_rebuilt rename to email_outbox`.execute(db);
  await sql`create index email_outbox_due_idx on email_outbox (send_after_ms) where sent_at_ms is null`.execute(
    db,
  );
  if (indexes) await createIndexes(db);
}

async function createIndexes(db: AnyDb): Promise<void> {
  await sql`create index email_outbox_user_id_idx on email_outbox (user_id)`.execute(db);
  await sql`create index email_outbox_created_at_ms_idx on email_outbox (created_at_ms)`.execute(db);
}
