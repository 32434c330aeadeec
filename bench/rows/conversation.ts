import { join } from 'node:path';
import type { Bench, Row } from '../support/context.ts';
import {
  measureConversationAndToken,
  type RunningGatehouse,
  registerAndLogin,
  seedUsers,
  startGatehouse,
} from '../support/gatehouse.ts';
import { measure } from '../support/load.ts';
import { withSeededPostgresDatabase } from '../support/postgres.ts';

/** The SQLite server of the /conversation row, left running for the /token and flood rows. */
export interface SqliteGatehouse {
  url: string;
  server: RunningGatehouse;
  auth: Record<string, string>;
}

export async function conversationRows(
  bench: Bench,
): Promise<{ sqlite: SqliteGatehouse; sqliteRow: Row; postgresRow: Row | undefined }> {
  const url = `sqlite:${join(bench.work, 'gatehouse.db')}`;
  seedUsers(bench, url, 1000);
  const server = await startGatehouse(bench, url);
  const auth = { authorization: `Bearer ${await registerAndLogin(server.base, 'benchuser')}` };
  const sqliteRow = await measure(bench, 'Gatehouse GET /conversation, SQLite', server.pid, {
    url: `${server.base}/conversation`,
    headers: auth,
  });
  const postgresRow = await withSeededPostgresDatabase(bench, 1000, (postgresUrl) =>
    measureConversationAndToken(bench, postgresUrl, 'PostgreSQL'),
  );
  return { sqlite: { url, server, auth }, sqliteRow, postgresRow };
}
