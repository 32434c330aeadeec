// The cost of the session (revocation) check on the hot path: the query every authenticated request runs
// (the session joined with its user, judged live) against the plain user lookup it replaced, on the same database.
// Both go the way requests do under load: reads of one turn of the event loop batched into one statement, here 32
// at a time (the bench's connections), each for another user, so that a batch never folds repeated keys.
import { createDb } from '../src/db/connect.ts';
import { migrateToLatest } from '../src/db/migrate.ts';
import { batchedReads, executePrepared, KEYS_SENTINEL, keyIn, prepareQuery } from '../src/db/prepared.ts';
import { createSessionsRepository } from '../src/db/sessions.ts';
import { userColumns } from '../src/db/user-rows.ts';
import { createUsersRepository } from '../src/db/users.ts';
import { isClaimedSessionLive } from '../src/services/session-state.ts';

const databaseUrl = process.argv[2] ?? 'sqlite::memory:';
const iterations = Number(process.argv[3] ?? 20000);
const CONCURRENT = 32;
const handle = createDb(
  databaseUrl.startsWith('postgres')
    ? { kind: 'postgres', url: databaseUrl }
    : { kind: 'sqlite', path: databaseUrl.slice(7) },
);
await migrateToLatest(handle);
const users = createUsersRepository(handle.db);
const sessions = createSessionsRepository(handle.db, handle.dialect);
const now = new Date();
const suffix = Math.random().toString(36).slice(2, 8);
const pairs: { userId: number; sessionId: string }[] = [];
for (let index = 0; index < CONCURRENT; index += 1) {
  const name = `rc${suffix}${index}`;
  const user = await users.insertUserWithConversation(
    {
      username: name,
      usernameCanonical: name,
      usernameSkeleton: name,
      email: `${name}@example.com`,
      emailCanonical: `${name}@example.com`,
      passwordHash: 'x',
      age: 1,
      level: 'beginner',
    },
    'hi',
    now,
  );
  const sessionId = `rc-${suffix}-${index}`;
  await sessions.insertSession(
    {
      id: sessionId,
      userId: user.id,
      expiresAt: new Date(now.getTime() + 86400_000),
      userAgent: undefined,
      ipAddress: undefined,
      scope: 'conversation:read conversation:write',
    },
    { id: `rt-${suffix}-${index}`, secretHash: 'x' },
    'x',
    now,
  );
  pairs.push({ userId: user.id, sessionId });
}
const policy = { idleTtlSeconds: 86400 };

/** CPU microseconds per read, the reads made CONCURRENT at a time. */
async function time(run: (pair: { userId: number; sessionId: string }) => Promise<unknown>): Promise<number> {
  const round = () => Promise.all(pairs.map(run));
  for (let i = 0; i < 200; i += 1) await round();
  const rounds = Math.ceil(iterations / CONCURRENT);
  const cpuStart = process.cpuUsage();
  for (let i = 0; i < rounds; i += 1) await round();
  const cpu = process.cpuUsage(cpuStart);
  return (cpu.user + cpu.system) / (rounds * CONCURRENT);
}

// The lookup without the check, prepared and batched the same way as the hot query so that only the join differs.
const userIds = keyIn(handle.dialect, 'users.id');
const usersByIds = prepareQuery(
  handle.db.selectFrom('users').select(userColumns).where(userIds.condition),
  KEYS_SENTINEL,
);
const userById = batchedReads(
  async (ids: number[]) => (await executePrepared(handle.db, usersByIds(userIds.bind(ids)))).rows,
  (row) => row.id,
);
// Both reads must find what they are timed on, or the figures would time empty answers.
for (const { userId, sessionId } of pairs) {
  const [user] = await userById(userId);
  const found = await sessions.findSessionWithUser(sessionId);
  if (user?.id !== userId || found?.user.id !== userId)
    throw new Error(`revocation check: no rows for ${sessionId}`);
}
const userOnly = await time(({ userId }) => userById(userId));
// The read and the rule the Bearer hook applies to it.
const withSession = await time(async ({ userId, sessionId }) => {
  const found = await sessions.findSessionWithUser(sessionId);
  return isClaimedSessionLive({ sessionId, userId }, found?.session, new Date(), policy);
});
console.log(JSON.stringify({ userLookupCpuUs: userOnly, userAndSessionCpuUs: withSession }));
await handle.close();
