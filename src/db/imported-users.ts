import { sql } from 'kysely';
import { insertWelcomedConversations } from './bulk-users.ts';
import type { Db, Dialect } from './schema.ts';
import { type NewUser, toNewUserRow } from './users.ts';

/** A user an import brings in: with the id it had before, or none for a new one. */
export type ImportedUser = NewUser & { id?: number };

/** A Gatehouse user that shares an id, a name, a lookalike of a name or an email with users being imported. */
export interface ClashingUser {
  id: number;
  username: string;
  usernameCanonical: string;
  usernameSkeleton: string;
  emailCanonical: string;
  passwordHash: string;
}

export interface ClashKeys {
  ids: number[];
  usernameCanonicals: string[];
  usernameSkeletons: string[];
  emailCanonicals: string[];
}

export interface ImportedUsersRepository {
  /** Returns the users that hold any of these ids, canonical names, skeletons or emails. */
  findClashingUsers(keys: ClashKeys): Promise<ClashingUser[]>;
  /**
   * Inserts the users with their conversations and welcome messages, skipping any that meets a unique index (taken
   * since it was checked); returns the ids and canonical names of those inserted.
   */
  insertImportedUsers(
    users: ImportedUser[],
    welcomeMessage: string,
    now: Date,
  ): Promise<{ id: number; usernameCanonical: string }[]>;
  /**
   * Returns the highest user id ever used: given out by the id sequence, held by a user, or named by an audit event
   * (0 when none); and in the same step moves the id sequence past it and past `id`, so that no new user takes an id
   * up to `id` that an import is about to insert explicitly, nor an id once used. Never moves it back.
   */
  reserveUserIdsThrough(id: number): Promise<number>;
}

export function createImportedUsersRepository(db: Db, dialect: Dialect): ImportedUsersRepository {
  return {
    async findClashingUsers(keys) {
      const rows = await db
        .selectFrom('users')
        .select([
          'id',
          'username',
          'username_canonical',
          'username_skeleton',
          'email_canonical',
          'password_hash',
        ])
        .where((eb) =>
          eb.or([
            ...(keys.ids.length > 0 ? [eb('id', 'in', keys.ids)] : []),
            ...(keys.usernameCanonicals.length > 0
              ? [eb('username_canonical', 'in', keys.usernameCanonicals)]
              : []),
            ...(keys.usernameSkeletons.length > 0
              ? [eb('username_skeleton', 'in', keys.usernameSkeletons)]
              : []),
            ...(keys.emailCanonicals.length > 0 ? [eb('email_canonical', 'in', keys.emailCanonicals)] : []),
          ]),
        )
        .execute();
      return rows.map((row) => ({
        id: Number(row.id),
        username: row.username,
        usernameCanonical: row.username_canonical,
        usernameSkeleton: row.username_skeleton,
        emailCanonical: row.email_canonical,
        passwordHash: row.password_hash,
      }));
    },

    async insertImportedUsers(users, welcomeMessage, now) {
      if (users.length === 0) return [];
      return db.transaction().execute(async (trx) => {
        const inserted: { id: number; usernameCanonical: string }[] = [];
        // Two statements: a multi-row insert names the same columns in every row, and new users have no id.
        for (const group of [
          users.filter((user) => user.id !== undefined),
          users.filter((user) => user.id === undefined),
        ]) {
          if (group.length === 0) continue;
          const rows = await trx
            .insertInto('users')
            .values(
              group.map(({ id, ...user }) => ({
                ...toNewUserRow(user, now),
                ...(id === undefined ? {} : { id }),
              })),
            )
            .onConflict((conflict) => conflict.doNothing())
            .returning(['id', 'username_canonical'])
            .execute();
          for (const row of rows)
            inserted.push({ id: Number(row.id), usernameCanonical: row.username_canonical });
        }
        await insertWelcomedConversations(
          trx,
          inserted.map((user) => user.id),
          welcomeMessage,
          now.getTime(),
        );
        return inserted;
      });
    },

    async reserveUserIdsThrough(id) {
      // Ids named by audit events count as used: the events outlive their user, and whoever held the id next would
      // see them as theirs.
      if (dialect === 'postgres') {
        return db.transaction().execute(async (trx) => {
          // Registrations wait for this step: none gets an id between the reading and the moving of the sequence.
          await sql`lock table users in share row exclusive mode`.execute(trx);
          const sequence = sql`pg_get_serial_sequence('users', 'id')::regclass`;
          const { rows } = await sql<{ used: string; given: string }>`select greatest(
              coalesce(pg_sequence_last_value(${sequence}), 0),
              coalesce((select max(id) from users), 0),
              coalesce((select max(user_id) from audit_events), 0)) as used,
            coalesce(pg_sequence_last_value(${sequence}), 0) as given`.execute(trx);
          const usedId = Number(rows[0]?.used ?? 0);
          const target = Math.max(id, usedId);
          // setval takes effect at once, whatever becomes of the transaction.
          if (target > Number(rows[0]?.given ?? 0))
            await sql`select setval(${sequence}, ${target})`.execute(trx);
          return usedId;
        });
      }
      // AUTOINCREMENT gives a new row one more than the larger of sqlite_sequence's value and the largest id. The
      // transaction writes first, so that it holds SQLite's write lock before it reads.
      return db.transaction().execute(async (trx) => {
        await sql`insert into sqlite_sequence (name, seq)
          select 'users', 0 where not exists (select 1 from sqlite_sequence where name = 'users')`.execute(
          trx,
        );
        const { rows } = await sql<{ used: number }>`select max(
            (select seq from sqlite_sequence where name = 'users'),
            coalesce((select max(id) from users), 0),
            coalesce((select max(user_id) from audit_events), 0)) as used`.execute(trx);
        const usedId = Number(rows[0]?.used ?? 0);
        const target = Math.max(id, usedId);
        await sql`update sqlite_sequence set seq = ${target} where name = 'users' and seq < ${target}`.execute(
          trx,
        );
        return usedId;
      });
    },
  };
}
