import { statSync } from 'node:fs';
import { join } from 'node:path';
import type { Bench } from '../support/context.ts';
import { measureConversationAndToken, seedUsers } from '../support/gatehouse.ts';
import { postgresBytesPerUser, withSeededPostgresDatabase } from '../support/postgres.ts';

// The same two paths with a large user table: the indexes, not the table size, must decide their cost.
export async function scaleRows(bench: Bench) {
  const { extraUsers, work } = bench;
  if (extraUsers > 0) {
    const users = extraUsers.toLocaleString('en-US');
    const bigSqlite = `sqlite:${join(work, 'gatehouse-large.db')}`;
    seedUsers(bench, bigSqlite, extraUsers);
    await measureConversationAndToken(bench, bigSqlite, `SQLite, ${users} users`);
    await withSeededPostgresDatabase(bench, extraUsers, async (url) => {
      await measureConversationAndToken(bench, url, `PostgreSQL, ${users} users`);
      bench.extra.postgresBytesPerUser = await postgresBytesPerUser(url, extraUsers);
    });
    bench.extra.sqliteBytesPerUser = statSync(join(work, 'gatehouse-large.db')).size / extraUsers;
  }
}
