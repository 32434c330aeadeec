import { sql } from 'kysely';
import { insertWelcomedConversations } from './bulk-users.ts';
import type { Db, Dialect, NewUserRow } from './schema.ts';

/** A user an import brings in: with the id it had before, or none for a new one. */
export type ImportedUserRow = NewUserRow & { id?: number };

/** A Gatehouse user that shares an id, a name, a lookalike of a name or an email with users being imported. */
export interface ClashingUser {
  id: number;
  username: string;
  usernameCanonical: string;
  usernameSkeleton: string;
  emailCanonical: string;
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
    users: ImportedUserRow[],
    welcomeMessage: string,
    now: Date,
  ): Promise<{ id: number; usernameCanonical: string }[]>;
  /**
   * Moves the id sequence of users to `id` when it is below: new users then get ids past it, and none of them takes
   * an id that an import is about to insert explicitly. Never moves it back.
   */
  moveUserIdsPast(id: number): Promise<void>;
}

export function createImportedUsersRepository(db: Db, dialect: Dialect): ImportedUsersRepository {
  return {
    async findClashingUsers(keys) {
      const rows = await db
        .selectFrom('users')
        .select(['id', 'username', 'username_canonical', 'username_skeleton', 'email_canonical'])
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
            .values(group)
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

    async moveUserIdsPast(id) {
      if (dialect === 'postgres') {
        // The identity column's sequence; setval takes effect at once, outside any transaction.
        await sql`select setval(s.seq, ${id})
          from (select pg_get_serial_sequence('users', 'id')::regclass as seq) s
          where ${id} > coalesce(pg_sequence_last_value(s.seq), 0)`.execute(db);
        return;
      }
      // AUTOINCREMENT gives a new row one more than the larger of sqlite_sequence's value and the largest id.
      await db.transaction().execute(async (trx) => {
        const moved =
          await sql`update sqlite_sequence set seq = ${id} where name = 'users' and seq < ${id}`.execute(trx);
        if (Number(moved.numAffectedRows ?? 0) > 0) return;
        await sql`insert into sqlite_sequence (name, seq)
          select 'users', ${id} where not exists (select 1 from sqlite_sequence where name = 'users')`.execute(
          trx,
        );
      });
    },
  };
}
