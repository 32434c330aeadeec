// The cost of the session (revocation) check on the hot path: the query every authenticated request runs
// (the session joined with its user, judged live) against the plain user lookup it replaced, on the same database.
import { createDb } from '../src/db/connect.ts';
import { migrateToLatest } from '../src/db/migrate.ts';
import { prepareQuery } from '../src/db/prepared.ts';
import { createSessionsRepository } from '../src/db/sessions.ts';
import { userColumns } from '../src/db/user-rows.ts';
import { createUsersRepository } from '../src/db/users.ts';
import { isClaimedSessionLive } from '../src/services/session-state.ts';

const databaseUrl = process.argv[2] ?? 'sqlite::memory:';
const iterations = Number(process.argv[3] ?? 20000);
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
const user = await users.insertUserWithConversation(
  {
    username: `rc${suffix}`,
    usernameCanonical: `rc${suffix}`,
    usernameSkeleton: `rc${suffix}`,
    email: `rc${suffix}@example.com`,
    emailCanonical: `rc${suffix}@example.com`,
    passwordHash: 'x',
    age: 1,
    level: 'beginner',
  },
  'hi',
  now,
);
const sessionId = `rc-${suffix}`;
await sessions.insertSession(
  {
    id: sessionId,
    userId: user.id,
    expiresAt: new Date(now.getTime() + 86400_000),
    userAgent: undefined,
    ipAddress: undefined,
    scope: 'conversation:read conversation:write',
  },
  { id: `rt-${suffix}`, secretHash: 'x' },
  'x',
  now,
);
const policy = { idleTtlSeconds: 86400 };

async function time(run: () => Promise<unknown>): Promise<number> {
  for (let i = 0; i < 2000; i += 1) await run();
  const cpuStart = process.cpuUsage();
  for (let i = 0; i < iterations; i += 1) await run();
  const cpu = process.cpuUsage(cpuStart);
  return (cpu.user + cpu.system) / iterations;
}

// The lookup without the check, prepared the same way as the hot query so that only the join differs.
const userById = prepareQuery(handle.db.selectFrom('users').select(userColumns).where('id', '=', -1), [-1]);
const userOnly = await time(() => handle.db.executeQuery(userById(user.id)));
// The read and the rule the Bearer hook applies to it.
const withSession = await time(async () => {
  const found = await sessions.findSessionWithUser(sessionId);
  return isClaimedSessionLive({ sessionId, userId: user.id }, found?.session, new Date(), policy);
});
console.log(JSON.stringify({ userLookupCpuUs: userOnly, userAndSessionCpuUs: withSession }));
await handle.close();
