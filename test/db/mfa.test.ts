import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMfaRepository } from '../../src/db/mfa.ts';
import { createUsersRepository } from '../../src/db/users.ts';
import { generateOneTimeToken } from '../../src/security/one-time-tokens.ts';
import { createTestClock } from '../support/clock.ts';
import { createTestDatabase, dialects, type TestDatabase } from '../support/dialects.ts';
import { newUser } from '../support/new-user.ts';

describe.each(dialects)('second factors on %s', (dialect) => {
  let database: TestDatabase;
  const clock = createTestClock();
  beforeAll(async () => {
    database = await createTestDatabase(dialect);
  });
  afterAll(async () => {
    await database.destroy();
  });

  const userNamed = (name: string) =>
    createUsersRepository(database.db).insertUserWithConversation(newUser(name), 'welcome', clock.now());
  const activeFactor = async (name: string) => {
    const mfa = createMfaRepository(database.db);
    const user = await userNamed(name);
    const id = `factor-${name}`;
    expect(
      await mfa.insertPendingTotp({ id, userId: user.id, secretSealed: 'sealed', createdAt: clock.now() }),
    ).toBe(true);
    expect(await mfa.activateTotp(id, user.id, 100, ['h1', 'h2'], [], clock.now())).toBe(true);
    return { mfa, user, id };
  };

  it('keeps one pending factor per user, and refuses a new enrolment while one is active', async () => {
    const mfa = createMfaRepository(database.db);
    const user = await userNamed('enrol');
    const pending = { userId: user.id, secretSealed: 's', createdAt: clock.now() };
    expect(await mfa.insertPendingTotp({ ...pending, id: 'p1' })).toBe(true);
    expect(await mfa.insertPendingTotp({ ...pending, id: 'p2' })).toBe(true);
    expect((await mfa.findTotpFactor(user.id))?.id).toBe('p2');
    expect(await mfa.hasActiveFactor(user.id)).toBe(false);
    expect(await mfa.activateTotp('p1', user.id, 5, [], [], clock.now())).toBe(false);
    expect(await mfa.activateTotp('p2', user.id, 5, [], [], clock.now())).toBe(true);
    expect(await mfa.hasActiveFactor(user.id)).toBe(true);
    expect(await mfa.insertPendingTotp({ ...pending, id: 'p3' })).toBe(false);
    expect((await mfa.findTotpFactor(user.id))?.status).toBe('active');
  });

  it('claims a time step for exactly one of 10 parallel callers, and never an earlier step', async () => {
    const { mfa, id } = await activeFactor('steps');
    expect(await mfa.claimTotpStep(id, 100)).toBe(false);
    const claims = await Promise.all(Array.from({ length: 10 }, () => mfa.claimTotpStep(id, 101)));
    expect(claims.filter(Boolean)).toHaveLength(1);
    expect(await mfa.claimTotpStep(id, 100)).toBe(false);
    expect(await mfa.claimTotpStep(id, 102)).toBe(true);
  });

  it('lists the unused recovery codes of the user, oldest first, at most as many as asked', async () => {
    const { mfa, user } = await activeFactor('listed');
    const other = await activeFactor('listed-other');
    const unused = await mfa.unusedRecoveryCodes(user.id, 10);
    expect(unused.map((code) => code.codeHash)).toEqual(['h1', 'h2']);
    expect(await mfa.unusedRecoveryCodes(user.id, 1)).toEqual(unused.slice(0, 1));
    const [first] = unused;
    expect(await mfa.claimRecoveryCodeById(user.id, first?.id ?? 0, clock.now())).toBe(true);
    expect(await mfa.unusedRecoveryCodes(user.id, 10)).toEqual(unused.slice(1));
    expect((await mfa.unusedRecoveryCodes(other.user.id, 10)).map((code) => code.codeHash)).toEqual([
      'h1',
      'h2',
    ]);
  });

  it('spends a recovery code for exactly one of 10 parallel callers, and only for its own user', async () => {
    const { mfa, user } = await activeFactor('codes');
    const other = await activeFactor('codes-other');
    expect(await mfa.countRecoveryCodesLeft(user.id)).toBe(2);
    const [code] = await mfa.unusedRecoveryCodes(user.id, 10);
    const id = code?.id ?? 0;
    expect(await mfa.claimRecoveryCodeById(other.user.id, id, clock.now())).toBe(false);
    const claims = await Promise.all(
      Array.from({ length: 10 }, () => mfa.claimRecoveryCodeById(user.id, id, clock.now())),
    );
    expect(claims.filter(Boolean)).toHaveLength(1);
    expect(await mfa.countRecoveryCodesLeft(user.id)).toBe(1);
    expect(await mfa.claimRecoveryCodeById(user.id, id, clock.now())).toBe(false);
    expect(await mfa.countRecoveryCodesLeft(other.user.id)).toBe(2);
  });

  it('gives back a claimed recovery code only to its claim, by its time', async () => {
    const { mfa, user } = await activeFactor('codes-back');
    const [code] = await mfa.unusedRecoveryCodes(user.id, 10);
    const id = code?.id ?? 0;
    const claimedAt = clock.now();
    expect(await mfa.claimRecoveryCodeById(user.id, id, claimedAt)).toBe(true);
    await mfa.releaseRecoveryCode(user.id, id, new Date(claimedAt.getTime() - 1));
    expect(await mfa.countRecoveryCodesLeft(user.id)).toBe(1);
    await mfa.releaseRecoveryCode(user.id, id, claimedAt);
    expect(await mfa.countRecoveryCodesLeft(user.id)).toBe(2);
    expect(await mfa.claimRecoveryCodeById(user.id, id, clock.now())).toBe(true);
  });

  it('counts at most the allowed attempts on a challenge, and spends it once', async () => {
    const mfa = createMfaRepository(database.db);
    const user = await userNamed('challenge');
    const { tokenHash } = generateOneTimeToken();
    const expiresAt = new Date(clock.now().getTime() + 300_000);
    await mfa.insertMfaChallenge(
      { tokenHash, userId: user.id, scope: 's', passwordDigest: 'd', expiresAt },
      clock.now(),
    );
    const attempts = await Promise.all(
      Array.from({ length: 10 }, () => mfa.countMfaChallengeAttempt(tokenHash, 5, clock.now())),
    );
    expect(attempts.filter(Boolean)).toHaveLength(5);
    expect(attempts.find(Boolean)).toEqual({ userId: user.id, scope: 's', passwordDigest: 'd' });
    const consumed = await Promise.all([1, 2, 3].map(() => mfa.consumeMfaChallenge(tokenHash, clock.now())));
    expect(consumed.filter(Boolean)).toHaveLength(1);
  });

  it('refuses an expired challenge', async () => {
    const mfa = createMfaRepository(database.db);
    const user = await userNamed('expired');
    const { tokenHash } = generateOneTimeToken();
    await mfa.insertMfaChallenge(
      { tokenHash, userId: user.id, scope: 's', passwordDigest: 'd', expiresAt: clock.now() },
      clock.now(),
    );
    expect(await mfa.countMfaChallengeAttempt(tokenHash, 5, clock.now())).toBeUndefined();
  });

  it('deletes every factor, code and challenge of the user, and they go with the user', async () => {
    const { mfa, user } = await activeFactor('gone');
    expect(await mfa.deleteSecondFactors(user.id, [], clock.now())).toBe(true);
    expect(await mfa.findTotpFactor(user.id)).toBeUndefined();
    expect(await mfa.countRecoveryCodesLeft(user.id)).toBe(0);
    expect(await mfa.deleteSecondFactors(user.id, [], clock.now())).toBe(false);
  });
});
