/**
 * Issue 14, TOTP and recovery codes through the product: enrolment on /users/me/mfa, the 403 mfa_required of the
 * password grant, the MFA grant with its amr, the one-winner rules of codes and mfa_tokens, R13's lock, the password
 * reset's second factor, and the operator's reset-mfa. On both databases.
 */
import { createHash } from 'node:crypto';
import type { InjectOptions } from 'fastify';
import { Redis } from 'ioredis';
import { generateSync } from 'otplib';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createCounterStore } from '../../src/db/counters.ts';
import { migrateToLatest } from '../../src/db/migrate.ts';
import { createPasskeysRepository } from '../../src/db/passkeys.ts';
import { AppError } from '../../src/errors.ts';
import { createPasswordHasher, type PasswordHasher } from '../../src/security/passwords.ts';
import {
  buildTestApp,
  FAST_ARGON2,
  loginToken,
  registerUser,
  STRONG_PASSWORD,
  type TestApp,
} from '../support/build-test-app.ts';
import { createCommandDatabase } from '../support/command-database.ts';
import { dialects } from '../support/dialects.ts';
import { mailedToken, outboxMails } from '../support/outbox.ts';

const MFA_GRANT = 'urn:gatehouse:params:oauth:grant-type:mfa';
const NEW_PASSWORD = 'a brand new passphrase here';

const bearer = (accessToken: string) => ({ authorization: `Bearer ${accessToken}` });
const claimsOf = (accessToken: string) =>
  JSON.parse(Buffer.from(accessToken.split('.')[1] ?? '', 'base64url').toString()) as Record<string, unknown>;

/** The steps of the authenticator app, driven by the test clock. */
function codes(t: TestApp) {
  const seconds = () => Math.floor(t.clock.now().getTime() / 1000);
  return {
    /** The code an app shows `offset` seconds from the server's now. */
    at: (secret: string, offset = 0) => generateSync({ secret, epoch: seconds() + offset }),
    /** Moves past every step a test may have claimed. */
    nextWindow: () => t.clock.advanceSeconds(90),
  };
}

/** The user-facing flows of one app: register, enrol, log in, the MFA grant. */
function flows(t: TestApp, prefix: string) {
  const otp = codes(t);
  let counter = 0;
  const inject = (options: InjectOptions) => t.app.inject(options);
  const passwordGrant = (
    username: string,
    password = STRONG_PASSWORD,
    headers: Record<string, string> = {},
  ) => t.app.inject({ method: 'POST', url: '/token', payload: { username, password }, headers });
  const mfaGrant = (payload: Record<string, string>, headers: Record<string, string> = {}) =>
    t.app.inject({ method: 'POST', url: '/token', payload: { grant_type: MFA_GRANT, ...payload }, headers });
  const mfaToken = async (username: string, headers: Record<string, string> = {}) => {
    const response = await passwordGrant(username, STRONG_PASSWORD, headers);
    expect(response.statusCode, response.body).toBe(403);
    return response.json().mfa_token as string;
  };
  const freshUser = async () => {
    counter += 1;
    const username = `${prefix}${counter}`;
    const user = await registerUser(t.app, { username, email: `${username}@example.com` });
    const accessToken = await loginToken(t.app, username);
    return { ...user, accessToken };
  };
  const startEnrolment = async (accessToken: string) => {
    const response = await inject({
      method: 'POST',
      url: '/users/me/mfa/totp',
      headers: bearer(accessToken),
      payload: { password: STRONG_PASSWORD },
    });
    expect(response.statusCode, response.body).toBe(200);
    return response.json() as { factor_id: string; secret: string; otpauth_uri: string };
  };
  /** A user with an active authenticator app; the step its confirmation used is behind the clock. */
  const enrolledUser = async () => {
    const user = await freshUser();
    const { secret } = await startEnrolment(user.accessToken);
    const confirmed = await inject({
      method: 'POST',
      url: '/users/me/mfa/totp/confirm',
      headers: bearer(user.accessToken),
      payload: { code: otp.at(secret) },
    });
    expect(confirmed.statusCode, confirmed.body).toBe(200);
    otp.nextWindow();
    return { ...user, secret, recoveryCodes: confirmed.json().recovery_codes as string[] };
  };
  const status = async (accessToken: string) =>
    (await inject({ method: 'GET', url: '/users/me/mfa', headers: bearer(accessToken) })).json();
  return { otp, inject, passwordGrant, mfaGrant, mfaToken, freshUser, startEnrolment, enrolledUser, status };
}

describe.each(dialects)('TOTP second factor on %s', (dialect) => {
  let t: TestApp;
  let f: ReturnType<typeof flows>;
  beforeAll(async () => {
    t = await buildTestApp(dialect, { env: { PUBLIC_URL: 'https://auth.example.test/' } });
    f = flows(t, 'totp');
  });
  afterAll(async () => {
    await t.close();
  });

  const eventsOf = async (userId: number) => {
    await t.app.auditTrail.flush();
    const rows = await t.database.db
      .selectFrom('audit_events')
      .selectAll()
      .where('user_id', '=', userId)
      .orderBy('id')
      .execute();
    return rows.map((row) => row.event);
  };

  it('enrols: pending with a secret and an otpauth URI, confirmed by a code with 10 recovery codes, then active', async () => {
    const user = await f.freshUser();
    expect(await f.status(user.accessToken)).toEqual({ totp: null, recovery_codes_left: 0, passkeys: 0 });
    const wrongPassword = await f.inject({
      method: 'POST',
      url: '/users/me/mfa/totp',
      headers: bearer(user.accessToken),
      payload: { password: 'not the password at all' },
    });
    expect(wrongPassword.statusCode).toBe(400);
    expect(wrongPassword.json()).toEqual({ detail: 'Incorrect password', code: 'invalid_password' });
    const noPassword = await f.inject({
      method: 'POST',
      url: '/users/me/mfa/totp',
      headers: bearer(user.accessToken),
      payload: {},
    });
    expect(noPassword.statusCode).toBe(401);
    expect(noPassword.json().code).toBe('insufficient_user_authentication');

    const first = await f.startEnrolment(user.accessToken);
    // Restarting a pending enrolment replaces it; current_password is the alias of password.
    const restarted = await f.inject({
      method: 'POST',
      url: '/users/me/mfa/totp',
      headers: bearer(user.accessToken),
      payload: { current_password: STRONG_PASSWORD },
    });
    expect(restarted.statusCode).toBe(200);
    const enrolment = restarted.json() as { factor_id: string; secret: string; otpauth_uri: string };
    expect(enrolment.secret).not.toBe(first.secret);
    expect(enrolment.secret).toMatch(/^[A-Z2-7]{32}$/);
    expect(enrolment.otpauth_uri).toMatch(/^otpauth:\/\/totp\//);
    expect(enrolment.otpauth_uri).toContain(`secret=${enrolment.secret}`);
    expect(enrolment.otpauth_uri).toContain('issuer=Gatehouse');
    const pending = await f.status(user.accessToken);
    expect(pending.totp.status).toBe('pending');
    expect(Number.isNaN(Date.parse(pending.totp.created_at))).toBe(false);

    const confirm = (payload: Record<string, string>) =>
      f.inject({
        method: 'POST',
        url: '/users/me/mfa/totp/confirm',
        headers: bearer(user.accessToken),
        payload,
      });
    const stale = await confirm({ code: f.otp.at(first.secret) });
    expect(stale.statusCode).toBe(400);
    expect(stale.json().code).toBe('invalid_second_factor');
    const confirmed = await confirm({ otp: f.otp.at(enrolment.secret) });
    expect(confirmed.statusCode, confirmed.body).toBe(200);
    const recoveryCodes = confirmed.json().recovery_codes as string[];
    expect(recoveryCodes).toHaveLength(10);
    expect(new Set(recoveryCodes).size).toBe(10);
    for (const code of recoveryCodes) expect(code).toMatch(/^[0-9A-Z]{4}(-[0-9A-Z]{4}){3}$/);
    const active = await f.status(user.accessToken);
    expect(active).toMatchObject({ totp: { status: 'active' }, recovery_codes_left: 10, passkeys: 0 });

    expect((await confirm({ code: f.otp.at(enrolment.secret, 30) })).statusCode).toBe(404);
    const again = await f.inject({
      method: 'POST',
      url: '/users/me/mfa/totp',
      headers: bearer(user.accessToken),
      payload: { password: STRONG_PASSWORD },
    });
    expect(again.statusCode).toBe(409);
    expect(again.json().code).toBe('mfa_already_enrolled');

    const mails = (await outboxMails(t.database, user.email)).filter(
      (mail) => mail.template === 'mfa_changed',
    );
    expect(mails).toHaveLength(1);
    expect(await eventsOf(user.id)).toEqual(
      expect.arrayContaining(['mfa_enrolment_started', 'mfa_enabled', 'second_factor_failed']),
    );
    // Secrets never reach the logs or the audit trail.
    const logged = t.logs.join('\n');
    const rows = await t.database.db.selectFrom('audit_events').selectAll().execute();
    const audited = JSON.stringify(rows);
    for (const secret of [enrolment.secret, first.secret, ...recoveryCodes]) {
      expect(logged).not.toContain(secret);
      expect(audited).not.toContain(secret);
    }
    f.otp.nextWindow();
  });

  it('lets a pending (unconfirmed) factor leave the password grant alone', async () => {
    const user = await f.freshUser();
    await f.startEnrolment(user.accessToken);
    const response = await f.passwordGrant(user.username);
    expect(response.statusCode, response.body).toBe(200);
    expect(claimsOf(response.json().access_token).amr).toEqual(['pwd']);
  });

  it('answers a right password 403 mfa_required with an mfa_token, then the MFA grant with a code gives tokens with amr', async () => {
    const user = await f.enrolledUser();
    const sessionsBefore = await t.database.db
      .selectFrom('sessions')
      .select('id')
      .where('user_id', '=', user.id)
      .execute();
    const wrong = await f.passwordGrant(user.username, 'not the password at all');
    expect(wrong.statusCode).toBe(400);
    expect(wrong.json().error).toBe('invalid_grant');

    const required = await f.passwordGrant(user.username);
    expect(required.statusCode).toBe(403);
    expect(required.headers['cache-control']).toBe('no-store');
    const body = required.json();
    expect(body).toEqual({
      error: 'mfa_required',
      error_description: 'A second factor is required',
      detail: 'A second factor is required',
      mfa_token: expect.stringMatching(/^[A-Za-z0-9_-]{43}$/),
      mfa_methods: ['otp', 'recovery_code'],
    });
    expect(body.access_token).toBeUndefined();
    const sessionsAfter = await t.database.db
      .selectFrom('sessions')
      .select('id')
      .where('user_id', '=', user.id)
      .execute();
    expect(sessionsAfter).toHaveLength(sessionsBefore.length);

    // Form-encoded, as OAuth clients send it.
    const granted = await t.app.inject({
      method: 'POST',
      url: '/token',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      payload: new URLSearchParams({
        grant_type: MFA_GRANT,
        mfa_token: body.mfa_token,
        otp: f.otp.at(user.secret),
      }).toString(),
    });
    expect(granted.statusCode, granted.body).toBe(200);
    expect(granted.headers['cache-control']).toBe('no-store');
    const tokens = granted.json();
    const claims = claimsOf(tokens.access_token);
    expect(claims.amr).toEqual(['pwd', 'otp', 'mfa']);
    expect(claims.auth_time).toBe(Math.floor(t.clock.now().getTime() / 1000));
    const me = await f.inject({ method: 'GET', url: '/users/me', headers: bearer(tokens.access_token) });
    expect(me.statusCode).toBe(200);

    t.clock.advanceSeconds(60);
    const refreshed = await f.inject({
      method: 'POST',
      url: '/token',
      payload: { grant_type: 'refresh_token', refresh_token: tokens.refresh_token },
    });
    expect(refreshed.statusCode, refreshed.body).toBe(200);
    const refreshedClaims = claimsOf(refreshed.json().access_token);
    expect(refreshedClaims.amr).toEqual(['pwd', 'otp', 'mfa']);
    expect(refreshedClaims.auth_time).toBe(claims.auth_time);

    // The mfa_token is single use.
    t.clock.advanceSeconds(30);
    const reused = await f.mfaGrant({ mfa_token: body.mfa_token, otp: f.otp.at(user.secret) });
    expect(reused.statusCode).toBe(400);
    expect(reused.json().error).toBe('invalid_grant');
    f.otp.nextWindow();
  });

  it('refuses malformed MFA grants with invalid_request, and secret parameters in the URL', async () => {
    const user = await f.enrolledUser();
    const mfaToken = await f.mfaToken(user.username);
    const code = f.otp.at(user.secret);
    const malformed: Record<string, string>[] = [
      { mfa_token: mfaToken },
      { otp: code },
      { mfa_token: mfaToken, otp: code, recovery_code: user.recoveryCodes[0] ?? '' },
      { mfa_token: mfaToken, challenge_id: 'abc' },
    ];
    for (const payload of malformed) {
      const response = await f.mfaGrant(payload);
      expect(response.statusCode, JSON.stringify(payload)).toBe(400);
      expect(response.json().error).toBe('invalid_request');
    }
    for (const name of ['mfa_token', 'otp', 'recovery_code']) {
      const response = await t.app.inject({
        method: 'POST',
        url: `/token?${name}=x`,
        payload: { grant_type: MFA_GRANT, mfa_token: mfaToken, otp: code },
      });
      expect(response.statusCode).toBe(400);
      expect(response.json().error).toBe('invalid_request');
    }
    // None of them used up the token.
    const granted = await f.mfaGrant({ mfa_token: mfaToken, otp: code });
    expect(granted.statusCode, granted.body).toBe(200);
    f.otp.nextWindow();
  });

  it('takes a recovery code once, as typed (case, dashes and spaces ignored), with amr pwd otp mfa', async () => {
    const user = await f.enrolledUser();
    const recoveryCode = user.recoveryCodes[3] ?? '';
    const typed = recoveryCode.toLowerCase().replace(/-/g, ' ');
    const granted = await f.mfaGrant({ mfa_token: await f.mfaToken(user.username), recovery_code: typed });
    expect(granted.statusCode, granted.body).toBe(200);
    expect(claimsOf(granted.json().access_token).amr).toEqual(['pwd', 'otp', 'mfa']);
    const again = await f.mfaGrant({
      mfa_token: await f.mfaToken(user.username),
      recovery_code: recoveryCode,
    });
    expect(again.statusCode).toBe(400);
    expect(again.json().error).toBe('invalid_grant');
    expect((await f.status(user.accessToken)).recovery_codes_left).toBe(9);
  });

  it('stores recovery codes as argon2id PHC strings, each salted (ASVS 6.5.2), never the code itself', async () => {
    const user = await f.enrolledUser();
    const rows = await t.database.db
      .selectFrom('recovery_codes')
      .select('code_hash')
      .where('user_id', '=', user.id)
      .execute();
    expect(rows).toHaveLength(10);
    for (const { code_hash: stored } of rows) {
      expect(stored).toMatch(/^\$argon2id\$v=19\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$/);
    }
    const stored = rows.map((row) => row.code_hash).join(' ');
    for (const code of user.recoveryCodes) expect(stored).not.toContain(code.replace(/-/g, ''));
  });

  it('still takes, once, a recovery code stored as SHA-256 by an earlier version', async () => {
    const user = await f.enrolledUser();
    const legacyCode = '0123-4567-89AB-CDEF';
    const [row] = await t.database.db
      .selectFrom('recovery_codes')
      .select('id')
      .where('user_id', '=', user.id)
      .orderBy('id')
      .execute();
    await t.database.db
      .updateTable('recovery_codes')
      .set({ code_hash: createHash('sha256').update('0123456789ABCDEF').digest('base64url') })
      .where('id', '=', row?.id ?? 0)
      .execute();
    const granted = await f.mfaGrant({
      mfa_token: await f.mfaToken(user.username),
      recovery_code: 'o123 4567 89ab cdef',
    });
    expect(granted.statusCode, granted.body).toBe(200);
    const again = await f.mfaGrant({ mfa_token: await f.mfaToken(user.username), recovery_code: legacyCode });
    expect(again.statusCode).toBe(400);
    expect(again.json().error).toBe('invalid_grant');
    expect((await f.status(user.accessToken)).recovery_codes_left).toBe(9);
    // The argon2id codes beside it work as before.
    const other = await f.mfaGrant({
      mfa_token: await f.mfaToken(user.username),
      recovery_code: user.recoveryCodes[9] ?? '',
    });
    expect(other.statusCode, other.body).toBe(200);
  });

  it('accepts a code one step (30 s) early or late, refuses it two steps (60 s) away', async () => {
    const user = await f.enrolledUser();
    const early = await f.mfaGrant({
      mfa_token: await f.mfaToken(user.username),
      otp: f.otp.at(user.secret, -30),
    });
    expect(early.statusCode, early.body).toBe(200);
    const late = await f.mfaGrant({
      mfa_token: await f.mfaToken(user.username),
      otp: f.otp.at(user.secret, 30),
    });
    expect(late.statusCode, late.body).toBe(200);
    f.otp.nextWindow();
    f.otp.nextWindow();
    const mfaToken = await f.mfaToken(user.username);
    for (const offset of [-60, 60]) {
      const refused = await f.mfaGrant({ mfa_token: mfaToken, otp: f.otp.at(user.secret, offset) });
      expect(refused.statusCode, String(offset)).toBe(400);
      expect(refused.json().error).toBe('invalid_grant');
    }
    f.otp.nextWindow();
  });

  it('takes one code once: the same code on a second login is refused', async () => {
    const user = await f.enrolledUser();
    const [first, second] = [await f.mfaToken(user.username), await f.mfaToken(user.username)];
    const code = f.otp.at(user.secret);
    expect((await f.mfaGrant({ mfa_token: first, otp: code })).statusCode).toBe(200);
    const replay = await f.mfaGrant({ mfa_token: second, otp: code });
    expect(replay.statusCode).toBe(400);
    expect(replay.json()).toMatchObject({ error: 'invalid_grant' });
    f.otp.nextWindow();
  });

  it('lets exactly one of 10 parallel MFA grants with one code (and with one recovery code) through', async () => {
    const user = await f.enrolledUser();
    const tokensFor = async () => {
      const tokens: string[] = [];
      for (let i = 0; i < 10; i += 1) tokens.push(await f.mfaToken(user.username));
      return tokens;
    };
    const code = f.otp.at(user.secret);
    const withCode = await Promise.all(
      (await tokensFor()).map((mfaToken) => f.mfaGrant({ mfa_token: mfaToken, otp: code })),
    );
    expect(withCode.map((response) => response.statusCode).sort()).toEqual([200, ...Array(9).fill(400)]);
    const recoveryCode = user.recoveryCodes[0] ?? '';
    const withRecovery = await Promise.all(
      (await tokensFor()).map((mfaToken) => f.mfaGrant({ mfa_token: mfaToken, recovery_code: recoveryCode })),
    );
    expect(withRecovery.map((response) => response.statusCode).sort()).toEqual([200, ...Array(9).fill(400)]);
    f.otp.nextWindow();
  });

  it('gives back the recovery codes of parallel grants of one mfa_token that lost to another', async () => {
    const user = await f.enrolledUser();
    const mfaToken = await f.mfaToken(user.username);
    const granted = await Promise.all(
      user.recoveryCodes
        .slice(0, 3)
        .map((recoveryCode) => f.mfaGrant({ mfa_token: mfaToken, recovery_code: recoveryCode })),
    );
    expect(granted.map((response) => response.statusCode).sort()).toEqual([200, 400, 400]);
    expect((await f.status(user.accessToken)).recovery_codes_left).toBe(9);
    // One second step passed, and the trail says so once (found from outside: once per grant, losers included).
    const events = await eventsOf(user.id);
    expect(events.filter((event) => event === 'second_factor_used')).toHaveLength(1);
    // The losers' codes work again; the winner's does not.
    const winner = user.recoveryCodes[granted.findIndex((response) => response.statusCode === 200)] ?? '';
    const loser = user.recoveryCodes[granted.findIndex((response) => response.statusCode === 400)] ?? '';
    const again = await f.mfaGrant({ mfa_token: await f.mfaToken(user.username), recovery_code: winner });
    expect(again.statusCode).toBe(400);
    const back = await f.mfaGrant({ mfa_token: await f.mfaToken(user.username), recovery_code: loser });
    expect(back.statusCode, back.body).toBe(200);
  });

  it('kills an mfa_token after 5 wrong attempts, even for a right code, and after 5 minutes', async () => {
    const user = await f.enrolledUser();
    const mfaToken = await f.mfaToken(user.username);
    for (let attempt = 0; attempt < 5; attempt += 1) {
      const wrong = await f.mfaGrant({ mfa_token: mfaToken, otp: f.otp.at(user.secret, 600) });
      expect(wrong.statusCode).toBe(400);
    }
    const right = await f.mfaGrant({ mfa_token: mfaToken, otp: f.otp.at(user.secret) });
    expect(right.statusCode).toBe(400);
    expect(right.json().error).toBe('invalid_grant');

    const expiring = await f.mfaToken(user.username);
    t.clock.advanceSeconds(301);
    const expired = await f.mfaGrant({ mfa_token: expiring, otp: f.otp.at(user.secret) });
    expect(expired.statusCode).toBe(400);
    expect(expired.json().error_description).toBe(right.json().error_description);
    // The code was never claimed: a fresh login takes it.
    const fresh = await f.mfaGrant({
      mfa_token: await f.mfaToken(user.username),
      otp: f.otp.at(user.secret),
    });
    expect(fresh.statusCode, fresh.body).toBe(200);
    f.otp.nextWindow();
  });

  it('refuses the second leg of an account disabled after its password matched', async () => {
    const user = await f.enrolledUser();
    const mfaToken = await f.mfaToken(user.username);
    await t.database.db
      .updateTable('users')
      .set({ disabled_at_ms: t.clock.now().getTime() })
      .where('id', '=', user.id)
      .execute();
    const refused = await f.mfaGrant({ mfa_token: mfaToken, otp: f.otp.at(user.secret) });
    expect(refused.statusCode).toBe(400);
    expect(refused.json().error).toBe('invalid_grant');
    f.otp.nextWindow();
  });

  it('voids the mfa_token when the password changes between the legs', async () => {
    const user = await f.enrolledUser();
    const mfaToken = await f.mfaToken(user.username);
    const changed = await f.inject({
      method: 'POST',
      url: '/users/me/password',
      headers: bearer(user.accessToken),
      payload: { current_password: STRONG_PASSWORD, new_password: NEW_PASSWORD },
    });
    expect(changed.statusCode, changed.body).toBe(204);
    const code = f.otp.at(user.secret);
    const refused = await f.mfaGrant({ mfa_token: mfaToken, otp: code });
    expect(refused.statusCode).toBe(400);
    expect(refused.json().error).toBe('invalid_grant');
    // The void token spent nothing: the same code still completes a login under the new password.
    const fresh = await f.inject({
      method: 'POST',
      url: '/token',
      payload: { username: user.username, password: NEW_PASSWORD },
    });
    expect(fresh.statusCode, fresh.body).toBe(403);
    const granted = await f.mfaGrant({ mfa_token: fresh.json().mfa_token, otp: code });
    expect(granted.statusCode, granted.body).toBe(200);
    f.otp.nextWindow();
  });

  it('gives the web client its refresh cookie after the MFA grant, as after the password grant', async () => {
    const user = await f.enrolledUser();
    const web = { 'x-gatehouse-client': 'web', origin: 'http://localhost' };
    const mfaToken = await f.mfaToken(user.username, web);
    const granted = await f.mfaGrant({ mfa_token: mfaToken, otp: f.otp.at(user.secret) }, web);
    expect(granted.statusCode, granted.body).toBe(200);
    expect(granted.json().refresh_token).toBeUndefined();
    expect(String(granted.headers['set-cookie'])).toContain('gatehouse_refresh=');
    f.otp.nextWindow();
  });

  it('removes the factor and regenerates codes only with the password and a second factor', async () => {
    const user = await f.enrolledUser();
    const regenerate = (payload: Record<string, string>) =>
      f.inject({
        method: 'POST',
        url: '/users/me/mfa/recovery-codes',
        headers: bearer(user.accessToken),
        payload,
      });
    expect((await regenerate({ password: STRONG_PASSWORD })).statusCode).toBe(401);
    const wrongPassword = await regenerate({
      password: 'not the password at all',
      otp: f.otp.at(user.secret),
    });
    expect(wrongPassword.statusCode).toBe(400);
    expect(wrongPassword.json().code).toBe('invalid_password');
    const wrongCode = await regenerate({ password: STRONG_PASSWORD, otp: f.otp.at(user.secret, 600) });
    expect(wrongCode.statusCode).toBe(400);
    expect(wrongCode.json().code).toBe('invalid_second_factor');
    const regenerated = await regenerate({ current_password: STRONG_PASSWORD, otp: f.otp.at(user.secret) });
    expect(regenerated.statusCode, regenerated.body).toBe(200);
    const fresh = regenerated.json().recovery_codes as string[];
    expect(fresh).toHaveLength(10);
    expect(fresh).not.toContain(user.recoveryCodes[0]);

    const remove = (payload: Record<string, string>) =>
      f.inject({ method: 'DELETE', url: '/users/me/mfa/totp', headers: bearer(user.accessToken), payload });
    expect((await remove({ password: STRONG_PASSWORD })).statusCode).toBe(401);
    const oldCode = await remove({ password: STRONG_PASSWORD, recovery_code: user.recoveryCodes[0] ?? '' });
    expect(oldCode.statusCode).toBe(400);
    expect(oldCode.json().code).toBe('invalid_second_factor');
    const removed = await remove({ password: STRONG_PASSWORD, recovery_code: fresh[0] ?? '' });
    expect(removed.statusCode, removed.body).toBe(204);
    expect(await f.status(user.accessToken)).toEqual({ totp: null, recovery_codes_left: 0, passkeys: 0 });
    expect((await f.passwordGrant(user.username)).statusCode).toBe(200);
    const mails = (await outboxMails(t.database, user.email)).filter(
      (mail) => mail.template === 'mfa_changed',
    );
    expect(mails).toHaveLength(3);
    expect(await eventsOf(user.id)).toEqual(
      expect.arrayContaining(['recovery_codes_regenerated', 'mfa_disabled']),
    );
    f.otp.nextWindow();
  });

  it('asks a password reset of an account with an authenticator app for a code, and keeps the link until one is right', async () => {
    const user = await f.enrolledUser();
    expect(
      (await f.inject({ method: 'POST', url: '/password/forgot', payload: { email: user.email } }))
        .statusCode,
    ).toBe(202);
    await t.app.backgroundWork.settled();
    const resetToken = await mailedToken(t.database, user.email, 'password_reset');
    const reset = (extra: Record<string, string>) =>
      f.inject({
        method: 'POST',
        url: '/password/reset',
        payload: { token: resetToken, new_password: NEW_PASSWORD, ...extra },
      });
    const missing = await reset({});
    expect(missing.statusCode).toBe(400);
    expect(missing.json()).toEqual({
      detail: 'A second factor is required',
      code: 'second_factor_required',
      mfa_methods: ['otp', 'recovery_code'],
    });
    const wrong = await reset({ otp: f.otp.at(user.secret, 600) });
    expect(wrong.statusCode).toBe(400);
    expect(wrong.json().code).toBe('invalid_second_factor');
    const wrongRecovery = await reset({ recovery_code: 'AAAA-BBBB-CCCC-DDDD' });
    expect(wrongRecovery.json().code).toBe('invalid_second_factor');
    // Nothing changed: the old password still matches (and still asks for the factor).
    expect((await f.passwordGrant(user.username)).statusCode).toBe(403);
    const done = await reset({ otp: f.otp.at(user.secret) });
    expect(done.statusCode, done.body).toBe(204);
    expect((await f.passwordGrant(user.username, NEW_PASSWORD)).statusCode).toBe(403);
    expect((await f.passwordGrant(user.username)).statusCode).toBe(400);
    f.otp.nextWindow();
  });

  it('resets the password of an account without an active factor as before, code or not', async () => {
    const user = await f.freshUser();
    await f.startEnrolment(user.accessToken);
    await f.inject({ method: 'POST', url: '/password/forgot', payload: { email: user.email } });
    await t.app.backgroundWork.settled();
    const resetToken = await mailedToken(t.database, user.email, 'password_reset');
    const done = await f.inject({
      method: 'POST',
      url: '/password/reset',
      payload: { token: resetToken, new_password: NEW_PASSWORD },
    });
    expect(done.statusCode, done.body).toBe(204);
  });
});

/** The reasons of the user's audited second_factor_failed events, oldest first. */
const failureReasons = async (t: TestApp, userId: number) => {
  await t.app.auditTrail.flush();
  const rows = await t.database.db
    .selectFrom('audit_events')
    .select('detail')
    .where('user_id', '=', userId)
    .where('event', '=', 'second_factor_failed')
    .orderBy('id')
    .execute();
  return rows.map((row) => (JSON.parse(String(row.detail)) as { reason?: string }).reason);
};

describe.each(dialects)('TOTP second-factor lock (RATE_LIMITS=on) on %s', (dialect) => {
  let t: TestApp;
  let f: ReturnType<typeof flows>;
  beforeAll(async () => {
    t = await buildTestApp(dialect, {
      env: { RATE_LIMITS: 'on', TOKEN_PASSWORD_PER_IP: '1000/60s', REGISTER_PER_IP: '1000/60s' },
    });
    f = flows(t, 'locked');
  });
  afterAll(async () => {
    await t.close();
  });

  it('locks after 10 failures for 15 minutes, refusing a right code as a wrong one, the reset too', async () => {
    const user = await f.enrolledUser();
    let lastRefusal = '';
    for (let login = 0; login < 2; login += 1) {
      const mfaToken = await f.mfaToken(user.username);
      for (let attempt = 0; attempt < 5; attempt += 1) {
        const wrong = await f.mfaGrant({ mfa_token: mfaToken, otp: f.otp.at(user.secret, 600) });
        expect(wrong.statusCode).toBe(400);
        lastRefusal = wrong.body;
      }
    }
    const locked = await f.mfaGrant({
      mfa_token: await f.mfaToken(user.username),
      otp: f.otp.at(user.secret),
    });
    expect(locked.statusCode).toBe(400);
    expect(locked.body).toBe(lastRefusal);
    const regenerate = await f.inject({
      method: 'POST',
      url: '/users/me/mfa/recovery-codes',
      headers: bearer(user.accessToken),
      payload: { password: STRONG_PASSWORD, otp: f.otp.at(user.secret) },
    });
    expect(regenerate.json().code).toBe('invalid_second_factor');

    // The counters keep real time (THROTTLING.md), so the 15 minutes are not waited for here; the lock is audited.
    expect(
      (await failureReasons(t, user.id)).filter((reason) => reason === 'locked').length,
    ).toBeGreaterThanOrEqual(2);
  });

  it("lifts the lock when an operator unlocks the user (the admin API): the owner's right code is taken", async () => {
    const user = await f.enrolledUser();
    // An mfa_token takes five codes: two logins' worth make the ten that lock.
    for (let login = 0; login < 2; login += 1) {
      const mfaToken = await f.mfaToken(user.username);
      for (let attempt = 0; attempt < 5; attempt += 1) {
        const wrong = await f.mfaGrant({ mfa_token: mfaToken, otp: f.otp.at(user.secret, 600) });
        expect(wrong.statusCode).toBe(400);
      }
    }
    expect(
      (await f.mfaGrant({ mfa_token: await f.mfaToken(user.username), otp: f.otp.at(user.secret) }))
        .statusCode,
    ).toBe(400);
    const boss = await f.freshUser();
    await t.database.db.updateTable('users').set({ roles: 'admin' }).where('id', '=', boss.id).execute();
    const adminLogin = await f.inject({
      method: 'POST',
      url: '/token',
      payload: { username: boss.username, password: STRONG_PASSWORD, scope: 'admin' },
    });
    expect(adminLogin.statusCode, adminLogin.body).toBe(200);
    const unlocked = await f.inject({
      method: 'POST',
      url: `/admin/users/${user.id}/unlock`,
      headers: bearer(adminLogin.json().access_token),
    });
    expect(unlocked.json()).toEqual({ unlocked: true });
    const granted = await f.mfaGrant({
      mfa_token: await f.mfaToken(user.username),
      otp: f.otp.at(user.secret),
    });
    expect(granted.statusCode, granted.body).toBe(200);
    f.otp.nextWindow();
  });

  it('hands out the device token with the MFA grant, not with the 403', async () => {
    const user = await f.enrolledUser();
    const required = await f.passwordGrant(user.username);
    expect(required.statusCode).toBe(403);
    expect(required.json().device_token).toBeUndefined();
    const granted = await f.mfaGrant({ mfa_token: required.json().mfa_token, otp: f.otp.at(user.secret) });
    expect(granted.statusCode, granted.body).toBe(200);
    expect(typeof granted.json().device_token).toBe('string');
    f.otp.nextWindow();
  });

  it('counts wrong codes of a password reset toward the same lock', async () => {
    const user = await f.enrolledUser();
    await f.inject({ method: 'POST', url: '/password/forgot', payload: { email: user.email } });
    await t.app.backgroundWork.settled();
    const resetToken = await mailedToken(t.database, user.email, 'password_reset');
    for (let attempt = 0; attempt < 10; attempt += 1) {
      const wrong = await f.inject({
        method: 'POST',
        url: '/password/reset',
        payload: { token: resetToken, new_password: NEW_PASSWORD, otp: f.otp.at(user.secret, 600) },
        remoteAddress: `198.51.100.${attempt + 1}`,
      });
      expect(wrong.json().code).toBe('invalid_second_factor');
    }
    const locked = await f.mfaGrant({
      mfa_token: await f.mfaToken(user.username),
      otp: f.otp.at(user.secret),
    });
    expect(locked.statusCode).toBe(400);
  });
});

const redisUrl = inject('redisUrl');

// R13's cap through the routes: 100 failures would take ten 15-minute locks, so the count is set in the shared Redis
// the app counts in, with the app's own counter store.
describe.skipIf(!redisUrl)('R13 cap of 100 second-factor failures (Redis)', () => {
  describe.each(dialects)('on %s', (dialect) => {
    let t: TestApp;
    let f: ReturnType<typeof flows>;
    const keyPrefix = `gh-test-r13-${dialect}-${Date.now()}:`;
    beforeAll(async () => {
      t = await buildTestApp(dialect, {
        env: {
          RATE_LIMITS: 'on',
          TOKEN_PASSWORD_PER_IP: '1000/60s',
          REGISTER_PER_IP: '1000/60s',
          REDIS_URL: redisUrl,
          REDIS_KEY_PREFIX: keyPrefix,
        },
      });
      f = flows(t, 'capped');
    });
    afterAll(async () => {
      await t.close();
      const client = new Redis(redisUrl);
      const keys = await client.keys(`${keyPrefix}*`);
      if (keys.length > 0) await client.del(...keys);
      client.disconnect();
    });

    const failHundredTimes = async (userId: number) => {
      const store = createCounterStore({ redis: { url: redisUrl, keyPrefix } });
      expect(await store.ready()).toBe(true);
      const cap = store.counter({ name: 'r13-cap', limit: 100, windowSeconds: 30 * 86400 });
      for (let i = 0; i < 100; i += 1) await cap.hit(String(userId));
      await store.close();
    };

    it('refuses the right code, takes a recovery code, and the code again once that success cleared the cap', async () => {
      const user = await f.enrolledUser();
      await failHundredTimes(user.id);
      const refused = await f.mfaGrant({
        mfa_token: await f.mfaToken(user.username),
        otp: f.otp.at(user.secret),
      });
      expect(refused.statusCode).toBe(400);
      expect(refused.json().error).toBe('invalid_grant');
      const recovered = await f.mfaGrant({
        mfa_token: await f.mfaToken(user.username),
        recovery_code: user.recoveryCodes[0] ?? '',
      });
      expect(recovered.statusCode, recovered.body).toBe(200);
      // The refused code was never checked, so its step is still unclaimed.
      const granted = await f.mfaGrant({
        mfa_token: await f.mfaToken(user.username),
        otp: f.otp.at(user.secret),
      });
      expect(granted.statusCode, granted.body).toBe(200);
      f.otp.nextWindow();
      expect(await failureReasons(t, user.id)).toEqual(['capped']);
    });

    it('still confirms a new authenticator app past the cap: its secret was just shown to the user', async () => {
      const user = await f.freshUser();
      await failHundredTimes(user.id);
      const { secret } = await f.startEnrolment(user.accessToken);
      const confirmed = await f.inject({
        method: 'POST',
        url: '/users/me/mfa/totp/confirm',
        headers: bearer(user.accessToken),
        payload: { code: f.otp.at(secret) },
      });
      expect(confirmed.statusCode, confirmed.body).toBe(200);
      f.otp.nextWindow();
    });
  });
});

describe.each(dialects)('gatehouse users reset-mfa on %s', (dialect) => {
  it('removes the authenticator app and recovery codes, audits mfa_reset, mails the user, says what it did', async () => {
    const target = await createCommandDatabase(dialect, 'gh_mfa');
    const handle = target.open();
    try {
      await migrateToLatest(handle);
      const t = await buildTestApp(dialect, { database: { ...handle, destroy: async () => {} } });
      const f = flows(t, 'operated');
      const user = await f.enrolledUser();
      expect((await f.passwordGrant(user.username)).statusCode).toBe(403);
      const passkeys = createPasskeysRepository(handle.db);
      const stored = await passkeys.insertPasskey(
        {
          id: 'operated-passkey',
          userId: user.id,
          credentialId: 'b3BlcmF0ZWQtY3JlZGVudGlhbA',
          publicKey: 'cHVibGljLWtleQ',
          signCount: 0,
          transports: ['internal'],
          aaguid: '00000000-0000-0000-0000-000000000000',
          backupEligible: false,
          backupState: false,
          uvInitialized: true,
          name: 'Laptop',
        },
        10,
        [],
        new Date(),
      );
      expect(stored).toBe('inserted');
      const { resetMfaCommand } = await import('../../src/commands/users.ts');
      const printed: string[] = [];
      const io = {
        print: (line: string) => printed.push(line),
        warn: (line: string) => printed.push(`warn: ${line}`),
        progress: () => {},
        isTerminal: false,
        confirm: async () => false,
        osUser: 'operator',
      };
      const config = { ...target.config, secrets: t.config.secrets };
      const code = await resetMfaCommand({
        config,
        options: { json: true },
        positionals: [user.username],
        io,
      });
      expect(code, printed.join('\n')).toBe(0);
      const output = JSON.parse(printed.join('\n'));
      expect(output).toMatchObject({
        id: user.id,
        username: user.username,
        removed: { totp: true, totp_status: 'active', recovery_codes: 10, passkeys: 1 },
      });
      expect((await f.passwordGrant(user.username)).statusCode).toBe(200);
      expect(await passkeys.countPasskeys(user.id)).toBe(0);
      const mails = (await outboxMails(t.database, user.email)).filter(
        (mail) => mail.template === 'mfa_changed',
      );
      expect(mails).toHaveLength(2);
      const events = await handle.db
        .selectFrom('audit_events')
        .selectAll()
        .where('user_id', '=', user.id)
        .where('event', '=', 'mfa_reset')
        .execute();
      expect(events).toHaveLength(1);
      expect(JSON.stringify(events[0])).toContain('cli:operator');

      printed.length = 0;
      expect(await resetMfaCommand({ config, options: {}, positionals: [user.username], io })).toBe(0);
      expect(printed.join('\n')).toContain('had no second factor');
      printed.length = 0;
      expect(await resetMfaCommand({ config, options: {}, positionals: ['nobody-here'], io })).toBe(1);
      expect(printed.join('\n')).toContain('no user named');
      await t.close();
    } finally {
      await handle.close();
      await target.drop();
    }
  });
});

describe.each(dialects)('password reset of an MFA account when its hash is shed, on %s', (dialect) => {
  let t: TestApp;
  let f: ReturnType<typeof flows>;
  let shedding = false;
  beforeAll(async () => {
    const real = createPasswordHasher(FAST_ARGON2, { importedBcryptCost: 4 });
    const passwords: PasswordHasher = {
      ...real,
      hash: (password, options) =>
        shedding
          ? Promise.reject(new AppError('overloaded', 'The server is busy; retry in a second.'))
          : real.hash(password, options),
    };
    t = await buildTestApp(dialect, { passwords });
    f = flows(t, 'shed');
  });
  afterAll(async () => {
    await t.close();
  });

  it('answers 503 without spending the recovery code, which then resets the password', async () => {
    const user = await f.enrolledUser();
    await f.inject({ method: 'POST', url: '/password/forgot', payload: { email: user.email } });
    await t.app.backgroundWork.settled();
    const resetToken = await mailedToken(t.database, user.email, 'password_reset');
    const reset = () =>
      f.inject({
        method: 'POST',
        url: '/password/reset',
        payload: { token: resetToken, new_password: NEW_PASSWORD, recovery_code: user.recoveryCodes[0] },
      });
    shedding = true;
    const shed = await reset();
    shedding = false;
    expect(shed.statusCode, shed.body).toBe(503);
    expect((await f.status(user.accessToken)).recovery_codes_left).toBe(10);
    const done = await reset();
    expect(done.statusCode, done.body).toBe(204);
    expect((await f.passwordGrant(user.username, NEW_PASSWORD)).statusCode).toBe(403);
  });
  // Found from outside: of two parallel resets with one link, the one that lost the link had spent its recovery code.
  it('gives back the recovery code of a parallel reset that lost the link', async () => {
    const user = await f.enrolledUser();
    await f.inject({ method: 'POST', url: '/password/forgot', payload: { email: user.email } });
    await t.app.backgroundWork.settled();
    const resetToken = await mailedToken(t.database, user.email, 'password_reset');
    const answers = await Promise.all(
      [0, 1].map((i) =>
        f.inject({
          method: 'POST',
          url: '/password/reset',
          payload: { token: resetToken, new_password: NEW_PASSWORD, recovery_code: user.recoveryCodes[i] },
        }),
      ),
    );
    expect(answers.map((answer) => answer.statusCode).sort()).toEqual([204, 400]);
    // One reset passed its second step, and the trail says so once (found in review: the loser's was recorded too).
    await t.app.auditTrail.flush();
    const used = await t.database.db
      .selectFrom('audit_events')
      .select('id')
      .where('user_id', '=', user.id)
      .where('event', '=', 'second_factor_used')
      .execute();
    expect(used).toHaveLength(1);
    const loser = answers.findIndex((answer) => answer.statusCode === 400);
    const login = await f.passwordGrant(user.username, NEW_PASSWORD);
    const signedIn = await f.inject({
      method: 'POST',
      url: '/token',
      payload: {
        grant_type: MFA_GRANT,
        mfa_token: login.json().mfa_token,
        recovery_code: user.recoveryCodes[loser],
      },
    });
    expect(signedIn.statusCode, signedIn.body).toBe(200);
    expect((await f.status(signedIn.json().access_token)).recovery_codes_left).toBe(8);
  });
});
