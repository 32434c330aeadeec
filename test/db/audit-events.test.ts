import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAuditEventsRepository, type NewAuditEvent } from '../../src/db/audit-events.ts';
import { createUsersRepository } from '../../src/db/users.ts';
import { createTestDatabase, dialects, type TestDatabase } from '../support/dialects.ts';

const at = (offsetMs: number) => new Date(Date.UTC(2026, 10, 25, 12) + offsetMs);

const event = (overrides: Partial<NewAuditEvent> = {}): NewAuditEvent => ({
  event: 'login_succeeded',
  userId: 1,
  ipAddress: '203.0.113.7',
  userAgent: 'curl/8.5',
  requestId: 'req-1',
  createdAt: at(0),
  detail: {},
  ...overrides,
});

describe.each(dialects)('audit events repository on %s', (dialect) => {
  let database: TestDatabase;
  let nextUserId = 1000;
  const freshUserId = () => {
    nextUserId += 1;
    return nextUserId;
  };

  beforeAll(async () => {
    database = await createTestDatabase(dialect);
  });
  afterAll(() => database.destroy());

  it('stores every column and reads the detail back as the object it was', async () => {
    const audit = createAuditEventsRepository(database.db);
    const userId = freshUserId();
    await audit.insertAuditEvents([
      event({
        userId,
        event: 'login_failed',
        ipAddress: '2001:db8::1',
        userAgent: 'Mozilla/5.0 (Ünïcode) 🔑',
        requestId: 'b0f2c3d4-0000-4000-8000-000000000000',
        createdAt: at(123),
        detail: { username: 'Ålice', reason: 'wrong_password', retryAfterSeconds: 30 },
      }),
    ]);
    const [stored] = await audit.findAuditEventsOfUser(userId, { limit: 10, beforeId: undefined });
    expect(stored).toEqual({
      id: expect.any(Number),
      event: 'login_failed',
      userId,
      ipAddress: '2001:db8::1',
      userAgent: 'Mozilla/5.0 (Ünïcode) 🔑',
      requestId: 'b0f2c3d4-0000-4000-8000-000000000000',
      createdAt: at(123),
      detail: { username: 'Ålice', reason: 'wrong_password', retryAfterSeconds: 30 },
    });
  });

  it('stores absent values as NULL and an empty detail as no detail', async () => {
    const audit = createAuditEventsRepository(database.db);
    await audit.insertAuditEvents([
      event({ event: 'request_throttled', userId: undefined, ipAddress: undefined, requestId: 'req-null' }),
    ]);
    const row = await database.db
      .selectFrom('audit_events')
      .selectAll()
      .where('request_id', '=', 'req-null')
      .executeTakeFirstOrThrow();
    expect(row).toMatchObject({ user_id: null, ip: null, detail: null });
  });

  it("pages a user's events newest first by id, and never returns another user's or unattributed events", async () => {
    const audit = createAuditEventsRepository(database.db);
    const alice = freshUserId();
    const bob = freshUserId();
    const batch: NewAuditEvent[] = [];
    for (let i = 0; i < 5; i += 1) {
      batch.push(event({ userId: alice, requestId: `alice-${i}`, createdAt: at(i) }));
      batch.push(event({ userId: bob, requestId: `bob-${i}`, createdAt: at(i) }));
      batch.push(event({ userId: undefined, requestId: `nobody-${i}`, createdAt: at(i) }));
    }
    await audit.insertAuditEvents(batch);

    const first = await audit.findAuditEventsOfUser(alice, { limit: 2, beforeId: undefined });
    expect(first.map((found) => found.requestId)).toEqual(['alice-4', 'alice-3']);
    const second = await audit.findAuditEventsOfUser(alice, { limit: 2, beforeId: first[1]?.id });
    expect(second.map((found) => found.requestId)).toEqual(['alice-2', 'alice-1']);
    const last = await audit.findAuditEventsOfUser(alice, { limit: 2, beforeId: second[1]?.id });
    expect(last.map((found) => found.requestId)).toEqual(['alice-0']);
    expect(await audit.findAuditEventsOfUser(alice, { limit: 2, beforeId: last[0]?.id })).toEqual([]);
  });

  it('keeps the events of a deleted user: user_id is not a foreign key that cascades', async () => {
    const users = createUsersRepository(database.db);
    const audit = createAuditEventsRepository(database.db);
    const passwordHash = '$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaA';
    const user = await users.insertUserWithConversation(
      {
        username: 'Mallory',
        usernameCanonical: 'mallory',
        usernameSkeleton: 'mallory',
        email: 'mallory@example.com',
        emailCanonical: 'mallory@example.com',
        passwordHash,
        age: 30,
        level: 'beginner',
      },
      'hi',
      at(0),
    );
    await audit.insertAuditEvents([event({ userId: user.id, event: 'user_registered' })]);
    expect(await users.deleteUser(user.id, passwordHash)).toBe(true);
    // Written after the user is gone, as the route does: no foreign key refuses it.
    await audit.insertAuditEvents([event({ userId: user.id, event: 'user_deleted' })]);
    const left = await audit.findAuditEventsOfUser(user.id, { limit: 10, beforeId: undefined });
    expect(left.map((found) => found.event)).toEqual(['user_deleted', 'user_registered']);
  });

  it('deletes events created before the cut-off in bounded batches, and nothing newer', async () => {
    const audit = createAuditEventsRepository(database.db);
    const userId = freshUserId();
    const cutoff = at(10_000);
    await audit.insertAuditEvents([
      ...Array.from({ length: 5 }, (_, i) => event({ userId, requestId: `old-${i}`, createdAt: at(i) })),
      event({ userId, requestId: 'at-cutoff', createdAt: cutoff }),
      event({ userId, requestId: 'new', createdAt: at(20_000) }),
    ]);
    const before = await countEvents();
    expect(await audit.deleteAuditEventsCreatedBefore(cutoff, 3)).toBe(3);
    let deleted = 3;
    for (let pass = 0; pass < 10; pass += 1) {
      const more = await audit.deleteAuditEventsCreatedBefore(cutoff, 3);
      deleted += more;
      if (more === 0) break;
    }
    // The other tests' events are all older than the cut-off too.
    expect(deleted).toBe(before - 2);
    const left = await audit.findAuditEventsOfUser(userId, { limit: 10, beforeId: undefined });
    expect(left.map((found) => found.requestId)).toEqual(['new', 'at-cutoff']);
  });

  it('pages by user with the (user_id, id) index and prunes with the created_at_ms index', async () => {
    const plan = async (query: ReturnType<typeof sql>) => {
      if (dialect === 'sqlite') {
        const { rows } = await sql`explain query plan ${query}`.execute(database.db);
        return JSON.stringify(rows);
      }
      return database.db.connection().execute(async (connection) => {
        // With a handful of rows a sequential scan is cheaper; the question is whether the index can serve.
        await sql`set enable_seqscan = off`.execute(connection);
        try {
          const { rows } = await sql`explain ${query}`.execute(connection);
          return JSON.stringify(rows);
        } finally {
          await sql`reset enable_seqscan`.execute(connection);
        }
      });
    };
    expect(
      await plan(
        sql`select * from audit_events where user_id = ${1} and id < ${100} order by id desc limit 20`,
      ),
    ).toContain('audit_events_user_id_id_idx');
    expect(await plan(sql`select id from audit_events where created_at_ms < ${5} limit 1000`)).toContain(
      'audit_events_created_at_ms_idx',
    );
  });

  async function countEvents(): Promise<number> {
    const row = await database.db
      .selectFrom('audit_events')
      .select((eb) => eb.fn.countAll().as('n'))
      .executeTakeFirstOrThrow();
    return Number(row.n);
  }

  // Last: its hundreds of old events would outlast the pruning test's bounded passes.
  it('stores every event of a batch in the order given, whatever its size, the same batch size again included', async () => {
    const audit = createAuditEventsRepository(database.db);
    for (const size of [1, 2, 32, 33, 200, 2]) {
      const userId = freshUserId();
      const batch = Array.from({ length: size }, (_, i) =>
        event({
          userId,
          requestId: `batch-${size}-${i}`,
          createdAt: at(i),
          ...(i % 2 === 0 ? { ipAddress: undefined, detail: { reason: `r${i}` } } : {}),
        }),
      );
      await audit.insertAuditEvents(batch);
      const stored = await audit.findAuditEventsOfUser(userId, { limit: 500, beforeId: undefined });
      expect(stored.reverse().map(({ id: _id, ...rest }) => rest)).toEqual(
        batch.map((sent) => ({ ...sent, ipAddress: sent.ipAddress ?? undefined })),
      );
    }
  });
});
