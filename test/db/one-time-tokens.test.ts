import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEmailFlowsRepository } from '../../src/db/email-flows.ts';
import {
  consumeOneTimeToken,
  createOneTimeTokensRepository,
  insertOneTimeToken,
  type NewOneTimeToken,
  spendTokensOfUser,
} from '../../src/db/one-time-tokens.ts';
import { createSessionsRepository } from '../../src/db/sessions.ts';
import { createUsersRepository, type NewUser } from '../../src/db/users.ts';
import { generateOneTimeToken } from '../../src/security/one-time-tokens.ts';
import { createTestClock } from '../support/clock.ts';
import { createTestDatabase, dialects, type TestDatabase } from '../support/dialects.ts';
import { newUser } from '../support/new-user.ts';

describe.each(dialects)('one-time tokens on %s', (dialect) => {
  let database: TestDatabase;
  const clock = createTestClock();
  beforeAll(async () => {
    database = await createTestDatabase(dialect);
  });
  afterAll(async () => {
    await database.destroy();
  });

  const userNamed = (name: string, overrides: Partial<NewUser> = {}) =>
    createUsersRepository(database.db).insertUserWithConversation(
      newUser(name, overrides),
      'welcome',
      clock.now(),
    );
  const tokenFor = (userId: number, email: string, purpose = 'verify_email', ttlSeconds = 3600) => {
    const generated = generateOneTimeToken();
    const row: NewOneTimeToken = {
      userId,
      purpose,
      email,
      tokenHash: generated.tokenHash,
      expiresAt: new Date(clock.now().getTime() + ttlSeconds * 1000),
    };
    return { secret: generated.token, tokenHash: generated.tokenHash, row };
  };

  it('stores only the hash, and spends a token exactly once', async () => {
    const user = await userNamed('once');
    const issued = tokenFor(user.id, 'once@example.com');
    await insertOneTimeToken(database.db, issued.row, clock.now());
    const stored = await database.db
      .selectFrom('one_time_tokens')
      .selectAll()
      .where('user_id', '=', user.id)
      .execute();
    expect(stored).toHaveLength(1);
    expect(stored[0]?.token_hash).toBe(issued.tokenHash);
    expect(JSON.stringify(stored)).not.toContain(issued.secret);
    expect(await consumeOneTimeToken(database.db, issued.tokenHash, 'verify_email', clock.now())).toEqual({
      userId: user.id,
      email: 'once@example.com',
    });
    expect(
      await consumeOneTimeToken(database.db, issued.tokenHash, 'verify_email', clock.now()),
    ).toBeUndefined();
  });

  it('lets exactly one of 10 parallel consumes of one token win', async () => {
    const user = await userNamed('racer');
    const issued = tokenFor(user.id, 'racer@example.com');
    await insertOneTimeToken(database.db, issued.row, clock.now());
    const results = await Promise.all(
      Array.from({ length: 10 }, () =>
        consumeOneTimeToken(database.db, issued.tokenHash, 'verify_email', clock.now()),
      ),
    );
    expect(results.filter((result) => result !== undefined)).toHaveLength(1);
  });

  it('refuses a token of another purpose', async () => {
    const tokens = createOneTimeTokensRepository(database.db);
    const user = await userNamed('purpose');
    const issued = tokenFor(user.id, user.email, 'reset_password');
    await insertOneTimeToken(database.db, issued.row, clock.now());
    expect(
      await consumeOneTimeToken(database.db, issued.tokenHash, 'verify_email', clock.now()),
    ).toBeUndefined();
    expect(await tokens.findLiveResetToken(issued.tokenHash, clock.now())).toBeDefined();
    expect(
      await consumeOneTimeToken(database.db, issued.tokenHash, 'reset_password', clock.now()),
    ).toBeDefined();
  });

  it('spends a reset token mailed to an address the account has left, so that it cannot come back to life', async () => {
    const tokens = createOneTimeTokensRepository(database.db);
    const user = await userNamed('leaver');
    const issued = tokenFor(user.id, user.email.toUpperCase(), 'reset_password');
    await insertOneTimeToken(database.db, issued.row, clock.now());
    expect(await tokens.findLiveResetToken(issued.tokenHash, clock.now())).toBeDefined();
    const moved = tokenFor(user.id, 'elsewhere@example.com', 'reset_password');
    await insertOneTimeToken(database.db, moved.row, clock.now());
    expect(await tokens.findLiveResetToken(moved.tokenHash, clock.now())).toBeUndefined();
    expect(
      await consumeOneTimeToken(database.db, moved.tokenHash, 'reset_password', clock.now()),
    ).toBeUndefined();
  });

  it('stores the canonical address: one row per address whatever its spelling', async () => {
    const user = await userNamed('spelling', {
      email: 'José@Bücher.de',
      emailCanonical: 'josé@xn--bcher-kva.de',
    });
    const first = tokenFor(user.id, 'José@Bücher.de');
    await insertOneTimeToken(database.db, first.row, clock.now());
    const second = tokenFor(user.id, 'JOSe\u0301@xn--bcher-kva.DE');
    await insertOneTimeToken(database.db, second.row, clock.now());
    const rows = await database.db
      .selectFrom('one_time_tokens')
      .select(['email', 'consumed_at_ms'])
      .where('user_id', '=', user.id)
      .orderBy('id')
      .execute();
    expect(rows.map((row) => [row.email, row.consumed_at_ms === null])).toEqual([
      ['josé@xn--bcher-kva.de', false],
      ['josé@xn--bcher-kva.de', true],
    ]);
    expect(
      await consumeOneTimeToken(database.db, first.tokenHash, 'verify_email', clock.now()),
    ).toBeUndefined();
  });

  it('still reads a token stored before addresses were canonical (as written, ASCII)', async () => {
    const tokens = createOneTimeTokensRepository(database.db);
    const user = await userNamed('legacy', {
      email: 'Legacy@Example.COM',
      emailCanonical: 'legacy@example.com',
    });
    const legacy = tokenFor(user.id, 'Legacy@Example.COM', 'reset_password');
    const verify = tokenFor(user.id, 'Legacy@Example.COM');
    for (const issued of [legacy, verify]) {
      await database.db
        .insertInto('one_time_tokens')
        .values({
          user_id: user.id,
          purpose: issued.row.purpose,
          email: issued.row.email,
          token_hash: issued.tokenHash,
          created_at_ms: clock.now().getTime(),
          expires_at_ms: issued.row.expiresAt.getTime(),
          consumed_at_ms: null,
        })
        .execute();
    }
    expect(await tokens.findLiveResetToken(legacy.tokenHash, clock.now())).toEqual({
      userId: user.id,
      email: 'Legacy@Example.COM',
    });
    // A link to the same address spends the older one; a link to another address leaves it.
    await spendTokensOfUser(database.db, user.id, clock.now().getTime(), {
      purpose: 'verify_email',
      emailCanonical: 'legacy@example.com',
    });
    await insertOneTimeToken(database.db, tokenFor(user.id, 'other@example.com').row, clock.now());
    expect(
      await consumeOneTimeToken(database.db, verify.tokenHash, 'verify_email', clock.now()),
    ).toBeDefined();
    await insertOneTimeToken(
      database.db,
      tokenFor(user.id, 'LEGACY@example.com', 'reset_password').row,
      clock.now(),
    );
    expect(await tokens.findLiveResetToken(legacy.tokenHash, clock.now())).toBeUndefined();
  });

  it('is valid one second before its expiry and refused at it', async () => {
    const tokens = createOneTimeTokensRepository(database.db);
    const user = await userNamed('expiry');
    const early = tokenFor(user.id, user.email, 'reset_password', 60);
    await insertOneTimeToken(database.db, early.row, clock.now());
    const at = (offsetSeconds: number) => new Date(early.row.expiresAt.getTime() + offsetSeconds * 1000);
    expect(await tokens.findLiveResetToken(early.tokenHash, at(-1))).toBeDefined();
    expect(await consumeOneTimeToken(database.db, early.tokenHash, 'reset_password', at(0))).toBeUndefined();
    expect(await consumeOneTimeToken(database.db, early.tokenHash, 'reset_password', at(-1))).toBeDefined();
  });

  it("voids the user's older tokens of the same purpose, and no one else's", async () => {
    const user = await userNamed('voider');
    const other = await userNamed('bystander');
    const older = tokenFor(user.id, 'voider@example.com');
    const reset = tokenFor(user.id, 'voider@example.com', 'reset_password');
    const others = tokenFor(other.id, 'bystander@example.com');
    for (const issued of [older, reset, others])
      await insertOneTimeToken(database.db, issued.row, clock.now());
    const newer = tokenFor(user.id, 'voider@example.com');
    await insertOneTimeToken(database.db, newer.row, clock.now());
    expect(
      await consumeOneTimeToken(database.db, older.tokenHash, 'verify_email', clock.now()),
    ).toBeUndefined();
    expect(
      await consumeOneTimeToken(database.db, newer.tokenHash, 'verify_email', clock.now()),
    ).toBeDefined();
    expect(
      await consumeOneTimeToken(database.db, reset.tokenHash, 'reset_password', clock.now()),
    ).toBeDefined();
    expect(
      await consumeOneTimeToken(database.db, others.tokenHash, 'verify_email', clock.now()),
    ).toBeDefined();
  });

  describe('email flows', () => {
    const startSession = async (userId: number, id: string) => {
      const hash = newUser('x').passwordHash;
      await createSessionsRepository(database.db, database.dialect).insertSession(
        {
          id,
          userId,
          expiresAt: new Date(clock.now().getTime() + 86400_000),
          userAgent: undefined,
          ipAddress: undefined,
          scope: '',
        },
        { id: `${id}-rt`, secretHash: 'h' },
        hash,
        clock.now(),
      );
    };
    const liveSessions = async (userId: number) =>
      (
        await database.db
          .selectFrom('sessions')
          .select('id')
          .where('user_id', '=', userId)
          .where('revoked_at_ms', 'is', null)
          .execute()
      ).length;
    const mail = (recipient: string, template: string) => ({
      userId: null,
      recipient,
      template,
      sealedPayload: 'sealed',
    });

    it('verifies the email in one transaction: the mark, every session ended, the mails queued', async () => {
      const flows = createEmailFlowsRepository(database.db);
      const user = await userNamed('verifier');
      await startSession(user.id, 'verifier-session');
      const issued = tokenFor(user.id, 'Verifier@Example.com');
      await flows.issueTokenWithMails(
        issued.row,
        [mail('verifier@example.com', 'verify_email')],
        clock.now(),
      );
      const result = await flows.verifyEmail(issued.tokenHash, clock.now(), () => [
        mail('x@example.com', 'probe'),
      ]);
      expect(result).toMatchObject({ outcome: 'verified', previousEmail: undefined, endedSessions: 1 });
      expect(result.outcome === 'verified' && result.user.emailVerifiedAt).toEqual(clock.now());
      expect(await liveSessions(user.id)).toBe(0);
      const queued = await database.db.selectFrom('email_outbox').select(['recipient', 'template']).execute();
      expect(queued).toEqual(
        expect.arrayContaining([
          { recipient: 'verifier@example.com', template: 'verify_email' },
          { recipient: 'x@example.com', template: 'probe' },
        ]),
      );
      expect(await flows.verifyEmail(issued.tokenHash, clock.now(), () => [])).toEqual({
        outcome: 'invalid_token',
      });
    });

    it('makes a verified pending address the email, and refuses it with email_taken, unspent, once taken', async () => {
      const flows = createEmailFlowsRepository(database.db);
      const users = createUsersRepository(database.db);
      const mover = await userNamed('mover');
      await database.db
        .updateTable('users')
        .set({ pending_email: 'New@Mover.example' })
        .where('id', '=', mover.id)
        .execute();
      const issued = tokenFor(mover.id, 'New@Mover.example');
      await flows.issueTokenWithMails(issued.row, [], clock.now());
      const squatter = await users.insertUserWithConversation(
        newUser('squatter', { email: 'new@mover.example', emailCanonical: 'new@mover.example' }),
        'welcome',
        clock.now(),
      );
      await expect(flows.verifyEmail(issued.tokenHash, clock.now(), () => [])).rejects.toMatchObject({
        code: 'email_taken',
      });
      await database.db.deleteFrom('users').where('id', '=', squatter.id).execute();
      const result = await flows.verifyEmail(issued.tokenHash, clock.now(), () => []);
      expect(result).toMatchObject({ outcome: 'verified', previousEmail: 'mover@example.com' });
      expect(await users.findUserById(mover.id)).toMatchObject({
        email: 'New@Mover.example',
        pendingEmail: null,
        emailVerifiedAt: clock.now(),
      });
    });

    it('refuses a verification link mailed to an address the account no longer has', async () => {
      const flows = createEmailFlowsRepository(database.db);
      const user = await userNamed('stale');
      const issued = tokenFor(user.id, 'old@stale.example');
      await flows.issueTokenWithMails(issued.row, [], clock.now());
      expect(await flows.verifyEmail(issued.tokenHash, clock.now(), () => [])).toEqual({
        outcome: 'invalid_token',
      });
      expect((await createUsersRepository(database.db).findUserById(user.id))?.emailVerifiedAt).toBeNull();
    });

    it('resets the password in one transaction, only for the address the link was mailed to', async () => {
      const flows = createEmailFlowsRepository(database.db);
      const user = await userNamed('resetter');
      await startSession(user.id, 'resetter-session');
      const stale = tokenFor(user.id, 'gone@resetter.example', 'reset_password');
      await flows.issueTokenWithMails(stale.row, [], clock.now());
      expect(await flows.resetPassword(stale.tokenHash, 'new-hash', clock.now(), () => [])).toBeUndefined();
      const issued = tokenFor(user.id, 'resetter@example.com', 'reset_password');
      await flows.issueTokenWithMails(issued.row, [], clock.now());
      const reset = await flows.resetPassword(issued.tokenHash, 'new-hash', clock.now(), (changed) => [
        mail(changed.email, 'password_changed'),
      ]);
      expect(reset?.endedSessions).toBe(1);
      expect(reset?.user.emailVerifiedAt).toEqual(clock.now());
      const credentials = await createUsersRepository(database.db).findCredentialsById(user.id);
      expect(credentials?.passwordHash).toBe('new-hash');
      expect(await liveSessions(user.id)).toBe(0);
      expect(
        await flows.resetPassword(issued.tokenHash, 'other-hash', clock.now(), () => []),
      ).toBeUndefined();
    });
  });
});
