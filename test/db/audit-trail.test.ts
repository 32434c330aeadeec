import { sql } from 'kysely';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createAuditEventsRepository } from '../../src/db/audit-events.ts';
import { type AuditRecord, type AuditTrail, createAuditTrail } from '../../src/services/audit.ts';
import { createTestClock, type TestClock } from '../support/clock.ts';
import { createTestDatabase, dialects, type TestDatabase } from '../support/dialects.ts';

const DAY_SECONDS = 86_400;

const record = (overrides: Partial<AuditRecord> = {}): AuditRecord => ({
  event: 'login_succeeded',
  fields: { userId: 7 },
  ipAddress: '198.51.100.4',
  userAgent: 'test-agent/1.0',
  requestId: 'req-1',
  ...overrides,
});

describe.each(dialects)('audit trail on %s', (dialect) => {
  let database: TestDatabase;
  let clock: TestClock;
  let trail: AuditTrail;
  let notStored: { count: number; error: unknown }[];

  const rows = () => database.db.selectFrom('audit_events').selectAll().orderBy('id').execute();

  beforeEach(async () => {
    database = await createTestDatabase(dialect);
    clock = createTestClock();
    notStored = [];
    trail = createAuditTrail({
      auditEvents: createAuditEventsRepository(database.db),
      clock,
      retentionDays: 90,
      onEventsNotStored: (count, error) => notStored.push({ count, error }),
    });
  });
  afterEach(async () => {
    await trail.flush();
    await database.destroy();
  });

  it('writes recorded events with the time they happened, not the time they were written', async () => {
    trail.record(record({ requestId: 'first' }));
    const happenedAt = clock.now().getTime();
    clock.advanceSeconds(60);
    trail.record(record({ requestId: 'second', fields: { userId: 7, sessionId: 'abc', password: 'pw' } }));
    await trail.flush();
    expect(await rows()).toEqual([
      {
        id: expect.anything(),
        event: 'login_succeeded',
        user_id: 7,
        ip: '198.51.100.4',
        user_agent: 'test-agent/1.0',
        request_id: 'first',
        created_at_ms: happenedAt,
        detail: null,
      },
      expect.objectContaining({
        request_id: 'second',
        created_at_ms: happenedAt + 60_000,
        detail: '{"sessionId":"abc"}',
      }),
    ]);
  });

  it('writes the events of one turn of the event loop in one statement, in the order recorded', async () => {
    for (let i = 0; i < 450; i += 1) trail.record(record({ requestId: `r${i}` }));
    await trail.flush();
    const stored = await rows();
    expect(stored.map((row) => row.request_id)).toEqual(Array.from({ length: 450 }, (_, i) => `r${i}`));
  });

  it('reports events it could not store instead of throwing, and writes again once the table is back', async () => {
    await sql`alter table audit_events rename to audit_events_away`.execute(database.db);
    expect(() => trail.record(record({ requestId: 'lost' }))).not.toThrow();
    await trail.flush();
    expect(notStored).toEqual([{ count: 1, error: expect.any(Error) }]);
    await sql`alter table audit_events_away rename to audit_events`.execute(database.db);
    trail.record(record({ requestId: 'kept' }));
    await trail.flush();
    expect((await rows()).map((row) => row.request_id)).toEqual(['kept']);
  });

  it('drops events beyond a bounded queue and reports how many, rather than holding memory without limit', async () => {
    for (let i = 0; i < 10_005; i += 1) trail.record(record({ requestId: `q${i}` }));
    await trail.flush();
    expect(notStored).toEqual([{ count: 5, error: expect.any(Error) }]);
    const row = await database.db
      .selectFrom('audit_events')
      .select((eb) => eb.fn.countAll().as('n'))
      .executeTakeFirstOrThrow();
    expect(Number(row.n)).toBe(10_000);
  });

  it('deletes events older than the retention period and keeps the rest', async () => {
    trail.record(record({ requestId: 'day-0' }));
    clock.advanceSeconds(DAY_SECONDS);
    trail.record(record({ requestId: 'day-1' }));
    await trail.flush();
    clock.advanceSeconds(89 * DAY_SECONDS);
    expect(await trail.pruneExpiredEvents()).toBe(0);
    clock.advanceSeconds(1);
    expect(await trail.pruneExpiredEvents()).toBe(1);
    expect((await rows()).map((row) => row.request_id)).toEqual(['day-1']);
    clock.advanceSeconds(DAY_SECONDS);
    expect(await trail.pruneExpiredEvents()).toBe(1);
    expect(await rows()).toEqual([]);
  });

  it('prunes more events than one batch deletes', async () => {
    for (let i = 0; i < 2500; i += 1) trail.record(record({ requestId: `old-${i}` }));
    await trail.flush();
    clock.advanceSeconds(91 * DAY_SECONDS);
    expect(await trail.pruneExpiredEvents()).toBe(2500);
    expect(await rows()).toEqual([]);
  });

  it("pages a user's activity newest first with an opaque cursor, and refuses a malformed one", async () => {
    for (let i = 0; i < 5; i += 1) trail.record(record({ requestId: `a${i}` }));
    trail.record(record({ requestId: 'other', fields: { userId: 8 } }));
    const first = await trail.listActivity(7, { limit: 2, before: undefined });
    expect(first.events.map((event) => event.requestId)).toEqual(['a4', 'a3']);
    const second = await trail.listActivity(7, { limit: 2, before: first.next });
    expect(second.events.map((event) => event.requestId)).toEqual(['a2', 'a1']);
    const third = await trail.listActivity(7, { limit: 2, before: second.next });
    expect(third).toEqual({ events: [expect.objectContaining({ requestId: 'a0' })], next: undefined });
    await expect(trail.listActivity(7, { limit: 2, before: 'bogus!' })).rejects.toMatchObject({
      code: 'validation_failed',
    });
  });
});
