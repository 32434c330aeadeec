/**
 * Issue 14, adversarial and black-box, on SQLite and PostgreSQL: passkeys, driven over HTTP by a software
 * authenticator (support/issue14.ts) that can forge what Chromium's virtual one will not: bogus signatures, foreign
 * origins and RP IDs, clones with lower counters, challenges of another purpose or user. Written from the issue, the
 * contract and AUTH-FLOWS.md §4, §6, §7.4 alone. The server runs with PUBLIC_URL, WEBAUTHN_RP_ID=localhost and
 * WEBAUTHN_ORIGINS=http://localhost:PORT, the setting the browser tests use.
 */
import { randomBytes } from 'node:crypto';
import {
  type AuthenticationResponseJSON,
  type RegistrationResponseJSON,
  verifyAuthenticationResponse,
  verifyRegistrationResponse,
} from '@simplewebauthn/server';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { expectLogsFreeOf, type Json, postJson, rawHttp, strongPassword } from './support/client.ts';
import { refreshRaw, toGrant } from './support/grants.ts';
import { hasNoLink, type MailContext, newAccount, seen, useMailServer } from './support/issue13.ts';
import {
  addPasskey,
  amrOf,
  confirmTotp,
  deletePasskey,
  expectGrantRefused,
  expectMfaRequired,
  expectTokenInputRefused,
  listPasskeys,
  mfaGrant,
  mfaStatus,
  mfaWebauthnOptions,
  passkeyAccount,
  passkeyRegistrationOptions,
  passkeyRegistrationVerify,
  passkeySession,
  passwordGrant,
  passwordlessLogin,
  passwordlessOptions,
  renamePasskey,
  SoftAuthenticator,
  startTotp,
  stepAt,
  totp,
  webauthnGrant,
} from './support/issue14.ts';
import { createDatabase, DIALECTS, runUntilExit, startServer, type TestDatabase } from './support/server.ts';

vi.setConfig({ testTimeout: 120_000, hookTimeout: 90_000 });

const origin = (ctx: MailContext) => `http://localhost:${ctx.server.port}`;
const authFor = (ctx: MailContext) => new SoftAuthenticator(origin(ctx));
const passwordlessOptionsOn = (url: string) => postJson(url, {});
const b64uBytes = (s: unknown) => Buffer.from(String(s), 'base64url');

/** Tracks what an assertion carries, for the log scan. */
function trackAssertion(ctx: MailContext, resp: Json): Json {
  ctx.track(resp.response.signature);
  ctx.track(resp.response.clientDataJSON);
  return resp;
}

function passkeysOf(r: { json: Json; text: string; status: number }): Json[] {
  expect(r.status, r.text).toBe(200);
  expect(Array.isArray(r.json?.passkeys), r.text).toBe(true);
  return r.json.passkeys as Json[];
}

describe('issue 14 support: the software authenticator speaks WebAuthn as @simplewebauthn/server reads it', () => {
  // Guards the harness, not the server: a refusal in the suites below is then the server's doing.
  const rp = {
    expectedOrigin: 'http://localhost:1234',
    expectedRPID: 'localhost',
    requireUserVerification: true,
  };
  it('registration and assertion verify; UV, counters and BE/BS come through; forgeries fail', async () => {
    const auth = new SoftAuthenticator(rp.expectedOrigin);
    const challenge = randomBytes(32).toString('base64url');
    const { credential, response } = auth.register(
      { challenge, user: { id: randomBytes(64).toString('base64url') } },
      { backupEligible: true, backupState: true },
    );
    const reg = await verifyRegistrationResponse({
      response: response as RegistrationResponseJSON,
      expectedChallenge: challenge,
      ...rp,
    });
    expect(reg.verified).toBe(true);
    expect(reg.registrationInfo?.credentialDeviceType).toBe('multiDevice');
    expect(reg.registrationInfo?.credentialBackedUp).toBe(true);
    const stored = reg.registrationInfo?.credential;
    if (!stored) throw new Error('no credential');
    const check = async (f: Parameters<SoftAuthenticator['assert']>[2]) => {
      const ch = randomBytes(32).toString('base64url');
      const a = auth.assert(credential, { challenge: ch }, f);
      try {
        const v = await verifyAuthenticationResponse({
          response: a as AuthenticationResponseJSON,
          expectedChallenge: ch,
          ...rp,
          credential: stored,
        });
        return v.verified ? v.authenticationInfo.newCounter : -1;
      } catch {
        return -1;
      }
    };
    expect(await check({})).toBe(1);
    expect(await check({ counter: 9 })).toBe(9);
    expect(await check({ bogusSignature: true })).toBe(-1);
    expect(await check({ uv: false })).toBe(-1);
    expect(await check({ origin: 'http://evil.test' })).toBe(-1);
    expect(await check({ rpId: 'evil.test' })).toBe(-1);
  });
});

describe.each(DIALECTS)('issue 14, passkeys (%s)', (dialect) => {
  const ctx = useMailServer(dialect, {
    env: (port) => ({
      PUBLIC_URL: `http://localhost:${port}`,
      WEBAUTHN_RP_ID: 'localhost',
      WEBAUTHN_ORIGINS: `http://localhost:${port}`,
    }),
  });

  it('registration options: Bearer and password required; rp.id from config (not Host); 32-byte challenge; a 64-byte user handle without the username; resident key and UV required; attestation none', async () => {
    const { u, grant } = await newAccount(ctx);
    const none = await passkeyRegistrationOptions(ctx, grant.access, {});
    expect(none.status, `no password: ${seen(none)}`).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/error="insufficient_user_authentication"/);
    const wrong = await passkeyRegistrationOptions(ctx, grant.access, { password: strongPassword() });
    expect(wrong.status, seen(wrong)).toBe(400);
    expect(wrong.json?.code).toBe('invalid_password');
    const anon = await passkeyRegistrationOptions(ctx, 'not-a-token', { password: u.password });
    expect(anon.status, seen(anon)).toBe(401);

    const r = await passkeyRegistrationOptions(ctx, grant.access, { password: u.password });
    expect(r.status, seen(r)).toBe(200);
    expect(typeof r.json.challenge_id, seen(r)).toBe('string');
    const o = r.json.options as Json;
    expect(o.rp?.id).toBe('localhost');
    expect(b64uBytes(o.challenge).length, 'a 32-byte challenge').toBeGreaterThanOrEqual(32);
    const handle = b64uBytes(o.user?.id);
    expect(handle.length, 'user handle: 64 random bytes').toBe(64);
    const lower = u.username.toLowerCase();
    for (const form of [
      handle.toString('utf8'),
      handle.toString('latin1'),
      handle.toString('hex'),
      String(o.user.id),
    ]) {
      expect(form.toLowerCase(), 'no username in the user handle').not.toContain(lower);
    }
    expect(handle.toString('hex')).not.toContain(Buffer.from(u.username).toString('hex'));
    expect(o.user?.name).toBe(u.username);
    expect(o.authenticatorSelection?.residentKey).toBe('required');
    expect(o.authenticatorSelection?.userVerification).toBe('required');
    expect(o.attestation ?? 'none').toBe('none');
    expect((o.pubKeyCredParams as Json[]).map((p) => p.alg).sort()).toEqual([-257, -8, -7].sort());
    expect(o.excludeCredentials ?? []).toEqual([]);

    // the same handle each time (it is the user's), and Host never makes the RP ID
    const body = JSON.stringify({ password: u.password });
    const head = [
      'POST /users/me/passkeys/registration/options HTTP/1.1',
      'Host: evil.test',
      'X-Forwarded-Host: evil.test',
      'Origin: http://evil.test',
      'Connection: close',
      'Content-Type: application/json',
      `Authorization: Bearer ${grant.access}`,
      `Content-Length: ${Buffer.byteLength(body)}`,
    ].join('\r\n');
    const raw = await rawHttp(ctx.server.port, `${head}\r\n\r\n`, body);
    expect(raw.status, raw.body).toBe(200);
    const o2 = JSON.parse(raw.body).options as Json;
    expect(o2.rp?.id, 'RP ID from configuration, never from Host').toBe('localhost');
    expect(o2.user?.id, 'one handle per user').toBe(o.user.id);
    expect(o2.challenge, 'a new challenge per ceremony').not.toBe(o.challenge);
  });

  it('register → 201 record; list; rename (trimmed, 1..64); excludeCredentials lists it; another user gets 404; a mail is sent', async () => {
    const auth = authFor(ctx);
    const a = await passkeyAccount(ctx, auth, { name: '  My laptop  ' });
    expect(a.record).toMatchObject({
      name: 'My laptop',
      last_used_at: null,
      backed_up: false,
      suspect: false,
    });
    expect(typeof a.record.id).toBe('string');
    expect(Number.isNaN(Date.parse(a.record.created_at))).toBe(false);
    const list = passkeysOf(await listPasskeys(ctx, a.grant.access));
    expect(list.map((p) => p.id)).toEqual([a.record.id]);
    const st = await mfaStatus(ctx, a.grant.access);
    expect(st.json?.passkeys, seen(st)).toBe(1);
    const ren = await renamePasskey(ctx, a.grant.access, a.record.id, { name: '  Work key ' });
    expect(ren.status, seen(ren)).toBe(200);
    expect(ren.json.name).toBe('Work key');
    for (const bad of ['', '   ', 'x'.repeat(65)]) {
      const r = await renamePasskey(ctx, a.grant.access, a.record.id, { name: bad });
      expect([400, 422], `name ${JSON.stringify(bad).slice(0, 20)}: ${seen(r)}`).toContain(r.status);
    }
    const ok64 = await renamePasskey(ctx, a.grant.access, a.record.id, { name: 'y'.repeat(64) });
    expect(ok64.status, seen(ok64)).toBe(200);
    // With a passkey, a password-only session may not add another: a passkey sign-in may.
    const weak = await passkeyRegistrationOptions(ctx, a.grant.access, { password: a.u.password });
    expect(weak.status, seen(weak)).toBe(401);
    expect(weak.json?.code).toBe('insufficient_user_authentication');
    const strong = await passkeySession(ctx, a);
    const o = await passkeyRegistrationOptions(ctx, strong, { password: a.u.password });
    const excluded = ((o.json?.options?.excludeCredentials ?? []) as Json[]).map((c) => c.id);
    expect(excluded).toEqual([a.cred.id.toString('base64url')]);
    const dflt = await addPasskey(ctx, auth, a.u, strong);
    expect(dflt.record.name, 'the default name').toMatch(/^Passkey \d+$/);

    const other = await newAccount(ctx);
    expect((await renamePasskey(ctx, other.grant.access, a.record.id, { name: 'mine' })).status).toBe(404);
    const del = await deletePasskey(ctx, other.grant.access, a.record.id, { password: other.u.password });
    expect(del.status, seen(del)).toBe(404);
    expect(passkeysOf(await listPasskeys(ctx, other.grant.access))).toEqual([]);
    expect(passkeysOf(await listPasskeys(ctx, strong)).length).toBe(2);
    // Adding the second passkey from the passkey session ended the password-only one.
    expect((await listPasskeys(ctx, a.grant.access)).status).toBe(401);
    await ctx.sink.next({ to: a.u.email, match: hasNoLink, timeoutMs: 20_000 });
  });

  it('registration refused: wrong origin, wrong RP ID hash, UV off, a get-type clientData, a replayed challenge, a challenge of another user', async () => {
    const auth = authFor(ctx);
    const { u, grant } = await newAccount(ctx);
    const verifyWith = async (forge: Parameters<SoftAuthenticator['register']>[1]) => {
      const o = await passkeyRegistrationOptions(ctx, grant.access, { password: u.password });
      expect(o.status, seen(o)).toBe(200);
      const { response } = auth.register(o.json.options, forge);
      return await passkeyRegistrationVerify(ctx, grant.access, {
        challenge_id: o.json.challenge_id,
        response,
      });
    };
    for (const [what, forge] of [
      ['wrong origin', { origin: 'http://evil.test' }],
      ['origin on another port', { origin: 'http://localhost:1' }],
      ['wrong RP ID hash', { rpId: 'evil.test' }],
      ['UV off', { uv: false }],
      ['UP off', { up: false }],
      ['webauthn.get as the type', { type: 'webauthn.get' }],
    ] as const) {
      const r = await verifyWith(forge);
      expect(r.status >= 400 && r.status < 500, `${what}: ${seen(r)}`).toBe(true);
      expect(typeof r.json?.detail, `${what}: FastAPI-shaped: ${seen(r)}`).toBe('string');
    }
    expect(passkeysOf(await listPasskeys(ctx, grant.access))).toEqual([]);

    const o = await passkeyRegistrationOptions(ctx, grant.access, { password: u.password });
    const first = auth.register(o.json.options);
    const ok = await passkeyRegistrationVerify(ctx, grant.access, {
      challenge_id: o.json.challenge_id,
      response: first.response,
    });
    expect(ok.status, seen(ok)).toBe(201);
    const again = auth.register(o.json.options);
    const replay = await passkeyRegistrationVerify(ctx, grant.access, {
      challenge_id: o.json.challenge_id,
      response: again.response,
    });
    expect(replay.status, `a used registration challenge: ${seen(replay)}`).toBeGreaterThanOrEqual(400);
    expect(replay.status).toBeLessThan(500);

    const b = await newAccount(ctx);
    const ob = await passkeyRegistrationOptions(ctx, b.grant.access, { password: b.u.password });
    const stolen = auth.register(ob.json.options);
    const cross = await passkeyRegistrationVerify(ctx, grant.access, {
      challenge_id: ob.json.challenge_id,
      response: stolen.response,
    });
    expect(cross.status, `B's challenge verified by A: ${seen(cross)}`).toBeGreaterThanOrEqual(400);
    expect(passkeysOf(await listPasskeys(ctx, grant.access)).length).toBe(1);
    expect(passkeysOf(await listPasskeys(ctx, b.grant.access)).length).toBe(0);
  });

  it('public options reveal no credential ids whatever is sent; UV required; rp localhost', async () => {
    const a = await passkeyAccount(ctx, authFor(ctx));
    for (const body of [
      {},
      { username: a.u.username },
      { email: a.u.email },
      { user_id: a.u.id },
      { allowCredentials: [{ id: 'x' }] },
    ]) {
      const r = await passwordlessOptions(ctx, body);
      expect(r.status, `${JSON.stringify(body)}: ${seen(r)}`).toBe(200);
      expect(typeof r.json.challenge_id).toBe('string');
      const o = r.json.options as Json;
      expect(o.allowCredentials ?? [], JSON.stringify(body)).toEqual([]);
      expect(o.userVerification).toBe('required');
      expect(o.rpId).toBe('localhost');
      expect(b64uBytes(o.challenge).length).toBeGreaterThanOrEqual(32);
      expect(r.text).not.toContain(a.cred.id.toString('base64url'));
    }
  });

  it('passwordless with UV → tokens with amr ⊇ [hwk, user, mfa] and no pwd (JSON and form), carried by a refresh; a synced (BE) credential → swk', async () => {
    const auth = authFor(ctx);
    const a = await passkeyAccount(ctx, auth);
    const r = await passwordlessLogin(ctx, a);
    const g = toGrant(ctx, r, 'passwordless, JSON');
    const amr = amrOf(g.access);
    for (const m of ['hwk', 'user', 'mfa']) expect(amr, JSON.stringify(amr)).toContain(m);
    expect(amr).not.toContain('pwd');
    expect(amr).not.toContain('swk');
    const ref = toGrant(ctx, await refreshRaw(ctx, g.refresh), 'refresh');
    expect(amrOf(ref.access).sort()).toEqual([...amr].sort());
    toGrant(ctx, await passwordlessLogin(ctx, a, {}, 'form'), 'passwordless, form');
    const list = passkeysOf(await listPasskeys(ctx, a.grant.access));
    expect(list[0]?.last_used_at, 'last_used_at set').not.toBeNull();

    const synced = await passkeyAccount(ctx, auth, {
      backupEligible: true,
      backupState: true,
      zeroCounter: true,
    });
    expect(synced.record.backed_up).toBe(true);
    for (let i = 0; i < 3; i++) {
      const s = toGrant(
        ctx,
        await passwordlessLogin(ctx, synced),
        `synced login ${i + 1} (counter 0 each time)`,
      );
      expect(amrOf(s.access)).toContain('swk');
    }
  });

  it('passwordless refused: UV off, UP off, a bogus signature, a wrong origin, a wrong RP ID hash, a foreign user handle, an unknown credential; a good assertion still works after', async () => {
    const auth = authFor(ctx);
    const a = await passkeyAccount(ctx, auth);
    const b = await passkeyAccount(ctx, auth);
    const cases: Array<[string, Parameters<SoftAuthenticator['assert']>[2]]> = [
      ['UV off', { uv: false }],
      ['UP off', { up: false }],
      ['a bogus signature', { bogusSignature: true }],
      ['a wrong origin', { origin: 'http://evil.test' }],
      ['an https origin not configured', { origin: 'https://localhost' }],
      ['a wrong RP ID hash', { rpId: 'evil.test' }],
      ["B's user handle", { userHandle: b.cred.userHandle }],
      ['no user handle (a passwordless login needs one)', { userHandle: null }],
      ['a create-type clientData', { type: 'webauthn.create' }],
    ];
    for (const [what, forge] of cases) {
      const o = await passwordlessOptions(ctx);
      const resp = trackAssertion(ctx, auth.assert(a.cred, o.json.options, forge));
      expectGrantRefused(await webauthnGrant(ctx, o.json.challenge_id, resp), what);
    }
    const stranger = new SoftAuthenticator(origin(ctx)).register({
      challenge: 'x',
      user: { id: a.cred.userHandle.toString('base64url') },
    }).credential;
    const o = await passwordlessOptions(ctx);
    expectGrantRefused(
      await webauthnGrant(ctx, o.json.challenge_id, auth.assert(stranger, o.json.options)),
      'an unknown credential',
    );
    expectGrantRefused(
      await webauthnGrant(ctx, 'no-such-challenge', auth.assert(a.cred, o.json.options)),
      'an unknown challenge_id',
    );
    toGrant(ctx, await passwordlessLogin(ctx, a), 'a good assertion after the refusals');
    expect(passkeysOf(await listPasskeys(ctx, a.grant.access))[0]?.suspect).toBe(false);
  });

  it('a replayed assertion → refused; 10 parallel grants with one assertion → exactly one success', async () => {
    const auth = authFor(ctx);
    const a = await passkeyAccount(ctx, auth);
    const o = await passwordlessOptions(ctx);
    const resp = trackAssertion(ctx, auth.assert(a.cred, o.json.options));
    toGrant(ctx, await webauthnGrant(ctx, o.json.challenge_id, resp), 'first use');
    expectGrantRefused(await webauthnGrant(ctx, o.json.challenge_id, resp), 'the same assertion again');
    const o2 = await passwordlessOptions(ctx);
    const resp2 = trackAssertion(ctx, auth.assert(a.cred, o2.json.options));
    const rs = await Promise.all(
      Array.from({ length: 10 }, () => webauthnGrant(ctx, o2.json.challenge_id, resp2)),
    );
    const wins = rs.filter((r) => r.status === 200);
    expect(wins.length, rs.map((r) => r.status).join(',')).toBe(1);
    for (const r of rs.filter((x) => x.status !== 200)) expectGrantRefused(r, 'a loser');
    for (const w of wins) ctx.track(w.json.access_token);
  });

  it('challenges are bound to their purpose: a registration or second-factor challenge does not open a passwordless login', async () => {
    const auth = authFor(ctx);
    const a = await passkeyAccount(ctx, auth);
    const reg = await passkeyRegistrationOptions(ctx, await passkeySession(ctx, a), {
      password: a.u.password,
    });
    expect(reg.status, seen(reg)).toBe(200);
    const fromReg = auth.assert(a.cred, { challenge: reg.json.options.challenge });
    expectGrantRefused(await webauthnGrant(ctx, reg.json.challenge_id, fromReg), 'a registration challenge');
    const t = expectMfaRequired(ctx, await passwordGrant(ctx, a.u), 'password grant', ['webauthn']);
    const mo = await mfaWebauthnOptions(ctx, t);
    expect(mo.status, seen(mo)).toBe(200);
    const fromMfa = auth.assert(a.cred, mo.json.options);
    expectGrantRefused(
      await webauthnGrant(ctx, mo.json.challenge_id, fromMfa),
      'a second-factor challenge, passwordless',
    );
    const po = await passwordlessOptions(ctx);
    const fromPublic = auth.assert(a.cred, po.json.options);
    expectGrantRefused(
      await mfaGrant(
        ctx,
        { mfa_token: t, challenge_id: po.json.challenge_id, webauthn_response: fromPublic },
        'json',
      ),
      'a passwordless challenge in the MFA grant',
    );
  });

  it('a cloned credential with a lower counter → refused and the credential marked suspect; then refused even with a higher counter', async () => {
    const auth = authFor(ctx);
    const a = await passkeyAccount(ctx, auth);
    toGrant(ctx, await passwordlessLogin(ctx, a, { counter: 5 }), 'counter 5');
    const clone = auth.clone(a.cred, 2);
    expectGrantRefused(await passwordlessLogin(ctx, { auth, cred: clone }), 'the clone, counter 3');
    const list = passkeysOf(await listPasskeys(ctx, a.grant.access));
    expect(list[0]?.suspect, 'marked suspect').toBe(true);
    expectGrantRefused(
      await passwordlessLogin(ctx, a, { counter: 10 }),
      'the suspect credential, counter 10',
    );
    // A suspect passkey is no second factor any more (the owner was mailed): the password alone signs in, and the
    // passkey is offered nowhere.
    toGrant(ctx, await passwordGrant(ctx, a.u), 'password grant once the only passkey is suspect');
    const st = await mfaStatus(ctx, a.grant.access);
    expect(st.json?.passkeys, seen(st)).toBe(0);
  });

  it('an equal non-zero counter is a regression too', async () => {
    const auth = authFor(ctx);
    const a = await passkeyAccount(ctx, auth);
    toGrant(ctx, await passwordlessLogin(ctx, a, { counter: 7 }), 'counter 7');
    expectGrantRefused(await passwordlessLogin(ctx, a, { counter: 7 }), 'counter 7 again');
  });

  it('delete needs the password; a deleted credential is refused; a mail is sent', async () => {
    const auth = authFor(ctx);
    const a = await passkeyAccount(ctx, auth);
    await ctx.sink.next({ to: a.u.email, match: hasNoLink, timeoutMs: 20_000 }); // the add's
    const noPw = await deletePasskey(ctx, a.grant.access, a.record.id, {});
    expect(noPw.status, seen(noPw)).toBe(401);
    const badPw = await deletePasskey(ctx, a.grant.access, a.record.id, { password: strongPassword() });
    expect(badPw.status, seen(badPw)).toBe(400);
    expect(badPw.json?.code).toBe('invalid_password');
    expect(passkeysOf(await listPasskeys(ctx, a.grant.access)).length).toBe(1);
    const weak = await deletePasskey(ctx, a.grant.access, a.record.id, { password: a.u.password });
    expect(weak.status, seen(weak)).toBe(401);
    expect(weak.json?.code).toBe('insufficient_user_authentication');
    const strong = await passkeySession(ctx, a);
    const ok = await deletePasskey(ctx, strong, a.record.id, { password: a.u.password });
    expect(ok.status, seen(ok)).toBe(204);
    expect(passkeysOf(await listPasskeys(ctx, a.grant.access))).toEqual([]);
    expectGrantRefused(await passwordlessLogin(ctx, a), 'a deleted credential');
    toGrant(ctx, await passwordGrant(ctx, a.u), 'no passkey left: the password alone signs in again');
    await ctx.sink.next({ to: a.u.email, match: hasNoLink, timeoutMs: 20_000 });
    const again = await deletePasskey(ctx, a.grant.access, a.record.id, { password: a.u.password });
    expect(again.status, seen(again)).toBe(404);
  });

  it('at most 10 passkeys: the 11th is refused with 409 passkey_limit', async () => {
    const auth = authFor(ctx);
    const { u, grant: first } = await newAccount(ctx);
    const { cred } = await addPasskey(ctx, auth, u, first.access);
    const grant = { access: await passkeySession(ctx, { auth, cred }) };
    for (let i = 1; i < 10; i++) await addPasskey(ctx, auth, u, grant.access);
    const r = await passkeyRegistrationOptions(ctx, grant.access, { password: u.password });
    expect(r.status, seen(r)).toBe(409);
    expect(r.json?.code).toBe('passkey_limit');
    expect(typeof r.json?.detail).toBe('string');
    expect(passkeysOf(await listPasskeys(ctx, grant.access)).length).toBe(10);
  });

  it('an 11th passkey through two options fetched at 9 → one of the verifies refused', async () => {
    const auth = authFor(ctx);
    const { u, grant: first } = await newAccount(ctx);
    const { cred } = await addPasskey(ctx, auth, u, first.access);
    const grant = { access: await passkeySession(ctx, { auth, cred }) };
    for (let i = 1; i < 9; i++) await addPasskey(ctx, auth, u, grant.access);
    const [o1, o2] = await Promise.all([
      passkeyRegistrationOptions(ctx, grant.access, { password: u.password }),
      passkeyRegistrationOptions(ctx, grant.access, { password: u.password }),
    ]);
    expect(o1.status, seen(o1)).toBe(200);
    expect(o2.status, seen(o2)).toBe(200);
    const rs = await Promise.all(
      [o1, o2].map((o) =>
        passkeyRegistrationVerify(ctx, grant.access, {
          challenge_id: o.json.challenge_id,
          response: auth.register(o.json.options).response,
        }),
      ),
    );
    expect(rs.map((r) => r.status).sort(), rs.map(seen).join('\n')).toEqual([201, 409]);
    expect(passkeysOf(await listPasskeys(ctx, grant.access)).length).toBe(10);
  });

  it('as a second factor: the password grant answers mfa_required [webauthn]; options list the credential; the MFA grant accepts an assertion → amr ⊇ [pwd, hwk, mfa]', async () => {
    const auth = authFor(ctx);
    const a = await passkeyAccount(ctx, auth);
    const t = expectMfaRequired(ctx, await passwordGrant(ctx, a.u), 'password grant', ['webauthn']);
    const bad = await mfaWebauthnOptions(ctx, 'not-a-token');
    expect(bad.status, seen(bad)).toBe(400);
    expect(bad.json?.error).toBe('invalid_grant');
    let mo = await mfaWebauthnOptions(ctx, t);
    for (let i = 0; i < 6; i++) mo = await mfaWebauthnOptions(ctx, t); // options use up no attempt
    expect(mo.status, seen(mo)).toBe(200);
    expect(((mo.json.options.allowCredentials ?? []) as Json[]).map((c) => c.id)).toEqual([
      a.cred.id.toString('base64url'),
    ]);
    expect(mo.json.options.userVerification).toBe('required');
    const resp = trackAssertion(ctx, auth.assert(a.cred, mo.json.options));
    const r = await mfaGrant(
      ctx,
      { mfa_token: t, challenge_id: mo.json.challenge_id, webauthn_response: resp },
      'json',
    );
    const g = toGrant(ctx, r, 'MFA grant with a passkey');
    const amr = amrOf(g.access);
    for (const m of ['pwd', 'hwk', 'mfa']) expect(amr, JSON.stringify(amr)).toContain(m);
    expectGrantRefused(
      await mfaGrant(
        ctx,
        { mfa_token: t, challenge_id: mo.json.challenge_id, webauthn_response: resp },
        'json',
      ),
      'the same mfa_token and assertion again',
    );
    // form body: webauthn_response as a JSON string
    const t2 = expectMfaRequired(ctx, await passwordGrant(ctx, a.u), 'again');
    const mo2 = await mfaWebauthnOptions(ctx, t2);
    const resp2 = auth.assert(a.cred, mo2.json.options);
    toGrant(
      ctx,
      await mfaGrant(
        ctx,
        { mfa_token: t2, challenge_id: mo2.json.challenge_id, webauthn_response: JSON.stringify(resp2) },
        'form',
      ),
      'MFA grant with a passkey, form',
    );
  });

  it("second factor refused: UV off, B's credential on A's mfa_token, a bogus signature; a challenge_id without webauthn_response is invalid_request", async () => {
    const auth = authFor(ctx);
    const a = await passkeyAccount(ctx, auth);
    const b = await passkeyAccount(ctx, auth);
    const t = expectMfaRequired(ctx, await passwordGrant(ctx, a.u), 'A');
    for (const [what, cred, forge] of [
      ['UV off', a.cred, { uv: false }],
      ["B's credential", b.cred, {}],
      ['a bogus signature', a.cred, { bogusSignature: true }],
    ] as const) {
      const mo = await mfaWebauthnOptions(ctx, t);
      expect(mo.status, `${what}: ${seen(mo)}`).toBe(200);
      const resp = auth.assert(cred, mo.json.options, forge);
      expectGrantRefused(
        await mfaGrant(
          ctx,
          { mfa_token: t, challenge_id: mo.json.challenge_id, webauthn_response: resp },
          'json',
        ),
        what,
      );
    }
    const mo = await mfaWebauthnOptions(ctx, t);
    const missing = await mfaGrant(ctx, { mfa_token: t, challenge_id: mo.json.challenge_id }, 'json');
    expect(missing.status, seen(missing)).toBe(400);
    expect(missing.json?.error).toBe('invalid_request');
    const garbage = await mfaGrant(
      ctx,
      { mfa_token: t, challenge_id: mo.json.challenge_id, webauthn_response: '{not json' },
      'form',
    );
    expectTokenInputRefused(garbage, 'webauthn_response not JSON');
    const huge = await webauthnGrant(ctx, 'x'.repeat(100_000), { id: 'y'.repeat(100_000) });
    expectTokenInputRefused(huge, 'a huge passwordless grant');
    const arr = await webauthnGrant(ctx, ['a'], [1, 2]);
    expectTokenInputRefused(arr, 'arrays in the passwordless grant');
  });

  it('an account with TOTP and a passkey: mfa_methods lists all three, GET /users/me/mfa counts the passkey', async () => {
    const auth = authFor(ctx);
    const a = await passkeyAccount(ctx, auth);
    const s = await startTotp(ctx, await passkeySession(ctx, a), { password: a.u.password });
    expect(s.status, seen(s)).toBe(200);
    ctx.track(s.json.secret);
    const c = await confirmTotp(ctx, a.grant.access, { code: totp(s.json.secret, stepAt()) });
    expect(c.status, seen(c)).toBe(200);
    for (const code of c.json.recovery_codes) ctx.track(code);
    expectMfaRequired(ctx, await passwordGrant(ctx, a.u), 'both', ['otp', 'recovery_code', 'webauthn']);
    const st = await mfaStatus(ctx, a.grant.access);
    expect(st.json).toMatchObject({ passkeys: 1, recovery_codes_left: 10 });
  });

  it('no assertion, signature or clientDataJSON in the logs', () => {
    expectLogsFreeOf(ctx);
  });
});

describe.concurrent('issue 14: WebAuthn configuration is validated at start', () => {
  const dbs: TestDatabase[] = [];
  const sqliteUrl = async () => {
    const d = await createDatabase('sqlite');
    dbs.push(d);
    return d.url;
  };
  afterAll(async () => {
    for (const d of dbs) await d.drop();
  });
  it.each([
    [
      'WEBAUTHN_RP_ID',
      'an IP address as RP ID',
      { WEBAUTHN_RP_ID: '127.0.0.1', WEBAUTHN_ORIGINS: 'http://127.0.0.1:8000' },
    ],
    [
      'WEBAUTHN_RP_ID',
      'an IPv6 address as RP ID',
      { WEBAUTHN_RP_ID: '[::1]', WEBAUTHN_ORIGINS: 'http://[::1]:8000' },
    ],
    [
      'WEBAUTHN_RP_ID',
      'an RP ID with a scheme',
      { WEBAUTHN_RP_ID: 'https://example.com', WEBAUTHN_ORIGINS: 'https://example.com' },
    ],
    [
      'WEBAUTHN_RP_ID',
      'an RP ID with a port',
      { WEBAUTHN_RP_ID: 'localhost:8000', WEBAUTHN_ORIGINS: 'http://localhost:8000' },
    ],
    [
      'WEBAUTHN_ORIGINS',
      'an origin of another host',
      { WEBAUTHN_RP_ID: 'localhost', WEBAUTHN_ORIGINS: 'http://evil.test' },
    ],
    [
      'WEBAUTHN_ORIGINS',
      'a suffix that is not a subdomain',
      { WEBAUTHN_RP_ID: 'example.com', WEBAUTHN_ORIGINS: 'https://notexample.com' },
    ],
    [
      'WEBAUTHN_ORIGINS',
      'http for a non-localhost origin',
      { WEBAUTHN_RP_ID: 'example.com', WEBAUTHN_ORIGINS: 'http://example.com' },
    ],
  ])('refuses to start naming %s for %s', async (variable, _what, env: Record<string, string>) => {
    // a refusal comes within a second or two; a server still running after 10 s has accepted the setting
    const r = await runUntilExit({ DATABASE_URL: await sqliteUrl(), PUBLIC_URL: undefined, ...env }, 10_000);
    expect(r.timedOut, `still running:\n${r.output}`).toBe(false);
    expect(r.code, r.output).not.toBe(0);
    expect(r.code, r.output).not.toBeNull();
    expect(r.output, 'the message names the variable').toContain(variable);
    expect(r.output, 'no stack trace').not.toMatch(/\n\s+at [\w.<]+ \(|node:internal/);
  });

  it('starts with RP ID example.com and an https subdomain origin', async () => {
    const server = await startServer({
      databaseUrl: await sqliteUrl(),
      env: {
        WEBAUTHN_RP_ID: 'example.com',
        WEBAUTHN_ORIGINS: 'https://login.example.com,https://example.com',
      },
    });
    try {
      const o = await passwordlessOptionsOn(server.url('/passkeys/authentication/options'));
      expect(o.status, o.text).toBe(200);
      expect(o.json?.options?.rpId).toBe('example.com');
    } finally {
      await server.stop();
    }
  });
});
