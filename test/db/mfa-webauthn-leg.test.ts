/**
 * The MFA grant's passkey branch, as services/mfa.ts runs it over the real repositories: the assertion is verified
 * by the passkeys' port (faked here: its own tests are the passkeys'), the mfa_token's attempts and single use still
 * apply, and the amr names the authenticator.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMfaRepository } from '../../src/db/mfa.ts';
import { createUsersRepository } from '../../src/db/users.ts';
import { AppError } from '../../src/errors.ts';
import { createPasswordHasher } from '../../src/security/passwords.ts';
import { createSecretBox } from '../../src/security/secret-box.ts';
import type { AccountsService } from '../../src/services/accounts.ts';
import { createMailComposer } from '../../src/services/mail.ts';
import { createMfaService, createSecondFactors, type WebauthnSecondFactor } from '../../src/services/mfa.ts';
import type { RequestContext } from '../../src/services/request-context.ts';
import { FAST_ARGON2 } from '../support/build-test-app.ts';
import { createTestClock } from '../support/clock.ts';
import { createTestDatabase, dialects, type TestDatabase } from '../support/dialects.ts';
import { newUser } from '../support/new-user.ts';

const context: RequestContext = { ipAddress: '192.0.2.1', userAgent: 'test', audit: () => {} } as never;

describe.each(dialects)('the MFA grant with a passkey on %s', (dialect) => {
  let database: TestDatabase;
  const clock = createTestClock();
  beforeAll(async () => {
    database = await createTestDatabase(dialect);
  });
  afterAll(async () => {
    await database.destroy();
  });

  const box = createSecretBox([randomBytes(32).toString('base64url')]);
  const serviceWith = (webauthn: WebauthnSecondFactor | undefined) =>
    createMfaService({
      mfa: createMfaRepository(database.db),
      users: createUsersRepository(database.db),
      // Enrolment is not exercised here.
      accounts: {} as AccountsService,
      box,
      // Recovery codes are not exercised here.
      hasher: createPasswordHasher(FAST_ARGON2),
      clock,
      mail: { composer: createMailComposer(box), publicUrl: 'http://localhost', mailQueued: () => {} },
      issuer: 'Gatehouse',
      webauthn,
    });
  let counter = 0;
  const login = async (mfa: ReturnType<typeof serviceWith>) => {
    counter += 1;
    const fields = newUser(`passkeyleg${counter}`);
    const user = await createUsersRepository(database.db).insertUserWithConversation(
      fields,
      'hi',
      clock.now(),
    );
    const mfaToken = await mfa.startChallenge(user, fields.passwordHash, 'conversation:read');
    if (mfaToken === undefined) throw new Error('the challenge of an enabled account was not stored');
    return { user, mfaToken };
  };
  const refusal = (promise: Promise<unknown>) =>
    promise.then(
      () => 'passed',
      (error: unknown) => (error instanceof AppError ? error.code : String(error)),
    );

  it('passes with an assertion the port accepts, with amr pwd hwk mfa, once', async () => {
    const seen: unknown[] = [];
    const mfa = serviceWith({
      verifySecondFactor: async (userId, challengeId, response) => {
        seen.push([userId, challengeId, response]);
        return { amr: 'hwk' };
      },
    });
    const { user, mfaToken } = await login(mfa);
    const proof = { webauthn: { challengeId: 'c1', response: { id: 'cred' } } };
    const passed = await mfa.redeemChallenge(mfaToken, proof, context);
    expect(passed).toMatchObject({
      method: 'webauthn',
      amr: ['pwd', 'hwk', 'mfa'],
      scope: 'conversation:read',
    });
    expect(passed.user.id).toBe(user.id);
    expect(seen).toEqual([[user.id, 'c1', { id: 'cred' }]]);
    expect(await refusal(mfa.redeemChallenge(mfaToken, proof, context))).toBe('invalid_grant');
  });

  it('counts refused assertions against the 5 attempts, and refuses any without the port', async () => {
    let accept = false;
    const mfa = serviceWith({ verifySecondFactor: async () => (accept ? { amr: 'swk' } : undefined) });
    const { mfaToken } = await login(mfa);
    const proof = { webauthn: { challengeId: 'c', response: '{}' } };
    for (let attempt = 0; attempt < 5; attempt += 1)
      expect(await refusal(mfa.redeemChallenge(mfaToken, proof, context))).toBe('invalid_grant');
    accept = true;
    expect(await refusal(mfa.redeemChallenge(mfaToken, proof, context))).toBe('invalid_grant');

    const without = serviceWith(undefined);
    const second = await login(without);
    expect(await refusal(without.redeemChallenge(second.mfaToken, proof, context))).toBe('invalid_grant');
  });

  it('names the user of a live mfa_token without spending an attempt, and refuses a spent, exhausted or expired one', async () => {
    const mfa = serviceWith({ verifySecondFactor: async () => undefined });
    const { user, mfaToken } = await login(mfa);
    for (let look = 0; look < 7; look += 1) expect(await mfa.userOfChallenge(mfaToken)).toBe(user.id);
    expect(await refusal(mfa.userOfChallenge('x'.repeat(43)))).toBe('invalid_grant');
    expect(await refusal(mfa.userOfChallenge('not a token'))).toBe('invalid_grant');
    const proof = { webauthn: { challengeId: 'c', response: '{}' } };
    for (let attempt = 0; attempt < 5; attempt += 1)
      await refusal(mfa.redeemChallenge(mfaToken, proof, context));
    expect(await refusal(mfa.userOfChallenge(mfaToken))).toBe('invalid_grant');
    const later = await login(mfa);
    clock.advanceSeconds(301);
    expect(await refusal(mfa.userOfChallenge(later.mfaToken))).toBe('invalid_grant');
  });

  it('lists webauthn among the methods of an account with a passkey, and nothing for none', async () => {
    const mfa = serviceWith(undefined);
    const { user } = await login(mfa);
    expect(await createSecondFactors({ mfa }).methodsOf(user.id)).toEqual([]);
    expect(await createSecondFactors({ mfa, countPasskeys: async () => 2 }).methodsOf(user.id)).toEqual([
      'webauthn',
    ]);
  });
});
