/**
 * Issue 14, adversarial and black-box, on SQLite and PostgreSQL: TOTP and recovery codes through /token, the account
 * routes and the password reset. Written from the issue, the contract and AUTH-FLOWS.md §3, §6, §7.3 alone; the codes
 * are computed here from the secret the server hands out. Time is the real clock the server shares with this process:
 * "±30 s" is the previous/next step's code, "±60 s" two steps away.
 */
import { describe, expect, it, vi } from 'vitest';
import { expectLogsFreeOf, postForm, type Reply, request, strongPassword } from './support/client.ts';
import { refreshRaw, toGrant } from './support/grants.ts';
import {
  expect202Empty,
  expectNot5xx,
  forgot,
  hasNoLink,
  newAccount,
  resetLink,
  seen,
  useMailServer,
} from './support/issue13.ts';
import {
  amrOf,
  awayFromBoundary,
  base32Decode,
  confirmTotp,
  deleteTotp,
  expectGrantRefused,
  expectMfaRequired,
  expectTokenInputRefused,
  freshCode,
  hotp,
  MFA_GRANT,
  mfaGrant,
  mfaLoginWithCode,
  mfaStatus,
  mfaTokenFor,
  parseOtpauth,
  passwordGrant,
  RFC6238_SHA1_VECTORS,
  recoveryCodeBits,
  regenerateCodes,
  startTotp,
  stepAt,
  type TotpAccount,
  totp,
  totpAccount,
  untilStep,
  wrongCode,
} from './support/issue14.ts';
import { DIALECTS } from './support/server.ts';

vi.setConfig({ testTimeout: 120_000, hookTimeout: 90_000 });

describe('issue 14 support: the suite computes RFC 6238 codes right', () => {
  it('RFC 6238 Appendix B SHA-1 vectors (8 digits) and a 6-digit truncation', () => {
    const key = Buffer.from('12345678901234567890', 'ascii');
    for (const [t, code] of RFC6238_SHA1_VECTORS) {
      expect(hotp(key, Math.floor(t / 30), 8), `T=${t}`).toBe(code);
    }
    expect(hotp(key, 1, 6)).toBe('287082');
    expect(base32Decode('GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ').toString('ascii')).toBe('12345678901234567890');
  });
});

const toFullwidth = (s: string) => [...s].map((c) => String.fromCharCode(0xff10 + Number(c))).join('');
const toArabicIndic = (s: string) => [...s].map((c) => String.fromCharCode(0x0660 + Number(c))).join('');

describe.each(DIALECTS)('issue 14, TOTP and recovery codes (%s)', (dialect) => {
  const ctx = useMailServer(dialect);
  /** Enrolled first; its ±30/60 s test runs last, when its confirm step is long past. */
  let aged: TotpAccount | undefined;

  it('enrolment: needs the Bearer token and the password; gives a ≥160-bit base32 secret and a valid otpauth URI (SHA1, 6 digits, 30 s, issuer)', async () => {
    const { u, grant } = await newAccount(ctx);
    const anon = await request(ctx.url('/users/me/mfa/totp'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ password: u.password }),
    });
    expect(anon.status, `no Bearer: ${seen(anon)}`).toBe(401);
    const none = await startTotp(ctx, grant.access, {});
    expect(none.status, `no password: ${seen(none)}`).toBe(401);
    expect(none.headers.get('www-authenticate')).toMatch(/error="insufficient_user_authentication"/);
    expect(none.text, 'no secret without the password').not.toMatch(/otpauth|secret/i);
    const wrong = await startTotp(ctx, grant.access, { password: strongPassword() });
    expect(wrong.status, `wrong password: ${seen(wrong)}`).toBe(400);
    expect(wrong.json?.code, seen(wrong)).toBe('invalid_password');
    expect(typeof wrong.json?.detail).toBe('string');
    expect(wrong.text).not.toMatch(/otpauth/);

    const r = await startTotp(ctx, grant.access, { password: u.password });
    expect(r.status, `enrol: ${seen(r)}`).toBe(200);
    const secret = ctx.track(r.json.secret as string);
    expect(typeof r.json.factor_id === 'string' || typeof r.json.factor_id === 'number').toBe(true);
    expect(secret, 'RFC 4648 base32 (no padding needed)').toMatch(/^[A-Z2-7]+=*$/);
    expect(base32Decode(secret).length * 8, 'a secret of ≥160 bits').toBeGreaterThanOrEqual(160);
    const uri = parseOtpauth(r.json.otpauth_uri);
    expect(uri.type).toBe('totp');
    expect(uri.params.get('secret')?.replace(/=+$/, '')).toBe(secret.replace(/=+$/, ''));
    expect(uri.params.get('algorithm') ?? 'SHA1').toBe('SHA1');
    expect(uri.params.get('digits') ?? '6').toBe('6');
    expect(uri.params.get('period') ?? '30').toBe('30');
    const issuer = uri.params.get('issuer');
    expect(issuer, 'an issuer parameter').toBeTruthy();
    expect(uri.label, 'the label names the account').toContain(u.username);
    expect(uri.label.startsWith(`${issuer}:`), `label "${uri.label}" prefixed by the issuer`).toBe(true);
    expect(r.headers.get('cache-control') ?? '', 'a secret is not cached').toMatch(/no-store/);

    const status = await mfaStatus(ctx, grant.access);
    expect(status.status, seen(status)).toBe(200);
    expect(status.json.totp?.status).toBe('pending');
    expect(status.text, 'the secret never reappears').not.toContain(secret);
  });

  it('a pending factor does not gate /token; restarting replaces the secret; the old secret cannot confirm; the setup code cannot sign in', async () => {
    aged = await totpAccount(ctx); // enrolled early, used by the last test
    const { u, grant } = await newAccount(ctx);
    const first = await startTotp(ctx, grant.access, { password: u.password });
    expect(first.status, seen(first)).toBe(200);
    ctx.track(first.json.secret);
    const pendingLogin = await passwordGrant(ctx, u);
    const g = toGrant(ctx, pendingLogin, 'a pending factor must not gate the password grant');
    expect(amrOf(g.access)).toEqual(['pwd']);
    const second = await startTotp(ctx, grant.access, { current_password: u.password });
    expect(second.status, `restart (current_password alias): ${seen(second)}`).toBe(200);
    const secret = ctx.track(second.json.secret as string);
    expect(secret, 'a new secret on restart').not.toBe(first.json.secret);
    await awayFromBoundary(6);
    const step = stepAt();
    const old = await confirmTotp(ctx, grant.access, { code: totp(first.json.secret, step) });
    expect(old.status, `a code of the replaced secret: ${seen(old)}`).toBe(400);
    expect(old.json?.code).toBe('invalid_second_factor');
    const ok = await confirmTotp(ctx, grant.access, { otp: totp(secret, step) });
    expect(ok.status, `confirm (otp alias): ${seen(ok)}`).toBe(200);
    for (const c of ok.json.recovery_codes) ctx.track(c);
    // The confirm claimed this step: the same code must not open the first login.
    const mfaToken = await mfaTokenFor(ctx, u, ['otp', 'recovery_code']);
    expectGrantRefused(
      await mfaGrant(ctx, { mfa_token: mfaToken, otp: totp(secret, step) }),
      'the setup code reused for the first login',
    );
    const next = await mfaGrant(ctx, { mfa_token: mfaToken, otp: totp(secret, step + 1) });
    toGrant(ctx, next, 'the next step after a refused attempt');
  });

  it('confirm shows 10 distinct recovery codes of ≥80 bits once; GET /users/me/mfa shows only a count; a second enrol is 409 without a secret', async () => {
    const a = await totpAccount(ctx);
    expect(a.recoveryCodes.length).toBe(10);
    expect(new Set(a.recoveryCodes.map((c) => c.replace(/[\s-]/g, '').toUpperCase())).size).toBe(10);
    for (const c of a.recoveryCodes) {
      expect(recoveryCodeBits(c), `recovery code ${c}: ≥80 bits`).toBeGreaterThanOrEqual(80);
    }
    const again = await confirmTotp(ctx, a.grant.access, { code: totp(a.secret, stepAt() + 1) });
    expect([400, 404, 409], `confirm again: ${seen(again)}`).toContain(again.status);
    expect(again.json?.recovery_codes, 'codes are shown once').toBeUndefined();
    const status = await mfaStatus(ctx, a.grant.access);
    expect(status.status, seen(status)).toBe(200);
    expect(status.json.totp?.status).toBe('active');
    expect(Number.isNaN(Date.parse(status.json.totp?.created_at)), 'created_at ISO').toBe(false);
    expect(status.json.recovery_codes_left).toBe(10);
    expect(status.json.passkeys).toBe(0);
    for (const c of a.recoveryCodes) expect(status.text).not.toContain(c);
    expect(status.text).not.toContain(a.secret);
    const dup = await startTotp(ctx, a.grant.access, { password: a.u.password });
    expect(dup.status, seen(dup)).toBe(409);
    expect(dup.json?.code).toBe('mfa_already_enrolled');
    expect(dup.text).not.toContain(a.secret);
    expect(dup.text).not.toMatch(/otpauth/);
    const mail = await ctx.sink.next({ to: a.u.email, match: hasNoLink, timeoutMs: 20_000 });
    expect(mail.text + mail.html + mail.subject, 'the notification carries no secret').not.toContain(
      a.secret,
    );
    for (const c of a.recoveryCodes) expect(mail.raw).not.toContain(c);
  });

  it('/token with the right password → 403 mfa_required (form and JSON), no-store, no tokens; a wrong password → invalid_grant without an mfa_token', async () => {
    const a = await totpAccount(ctx);
    expectMfaRequired(ctx, await passwordGrant(ctx, a.u, 'form'), 'form', ['otp', 'recovery_code']);
    const json = await passwordGrant(ctx, a.u, 'json');
    const t2 = expectMfaRequired(ctx, json, 'json', ['otp', 'recovery_code']);
    const t3 = expectMfaRequired(ctx, await passwordGrant(ctx, a.u), 'again');
    expect(t3, 'each mfa_token is new').not.toBe(t2);
    expect(t2).not.toContain(a.u.username);
    const bad = await passwordGrant(ctx, { username: a.u.username, password: strongPassword() });
    expectGrantRefused(bad, 'a wrong password on an MFA account');
    expect(bad.json).not.toHaveProperty('mfa_token');
  });

  it('the MFA grant with a code → tokens with amr ⊇ [pwd, otp, mfa] (form and JSON), carried through a refresh; the same code twice → the second refused', async () => {
    const a = await totpAccount(ctx);
    const t1 = await mfaTokenFor(ctx, a.u);
    const code = await freshCode(a);
    const r = await mfaGrant(ctx, { mfa_token: t1, otp: code }, 'form');
    const g = toGrant(ctx, r, 'MFA grant, form');
    expect(r.headers.get('cache-control') ?? '').toMatch(/no-store/);
    const amr = amrOf(g.access);
    for (const m of ['pwd', 'otp', 'mfa']) expect(amr, `amr ${JSON.stringify(amr)}`).toContain(m);
    const refreshed = toGrant(ctx, await refreshRaw(ctx, g.refresh), 'refresh');
    expect(amrOf(refreshed.access).sort(), 'a refresh carries amr on').toEqual([...amr].sort());
    const t2 = await mfaTokenFor(ctx, a.u);
    expectGrantRefused(
      await mfaGrant(ctx, { mfa_token: t2, otp: code }, 'json'),
      'the same code again (RFC 6238 §5.2)',
    );
    const ok = await mfaGrant(ctx, { mfa_token: t2, otp: await freshCode(a) }, 'json');
    const g2 = toGrant(ctx, ok, 'MFA grant, JSON, with the next step');
    expect(amrOf(g2.access)).toContain('mfa');
  });

  it('10 parallel MFA grants with one code (10 mfa_tokens) → exactly one success', async () => {
    const a = await totpAccount(ctx);
    const tokens = await Promise.all(Array.from({ length: 10 }, () => mfaTokenFor(ctx, a.u)));
    const code = await freshCode(a);
    const rs = await Promise.all(tokens.map((t) => mfaGrant(ctx, { mfa_token: t, otp: code })));
    for (const r of rs) expectNot5xx(r, 'race');
    const wins = rs.filter((r) => r.status === 200);
    expect(wins.length, rs.map((r) => r.status).join(',')).toBe(1);
    for (const r of rs.filter((x) => x.status !== 200)) expectGrantRefused(r, 'a loser of the race');
    for (const w of wins) ctx.track(w.json.access_token);
  });

  it('10 parallel MFA grants with one recovery code → exactly one success; the code is then spent; 9 left', async () => {
    const a = await totpAccount(ctx);
    const tokens = await Promise.all(Array.from({ length: 10 }, () => mfaTokenFor(ctx, a.u)));
    const rc = a.recoveryCodes[0] ?? '';
    const rs = await Promise.all(tokens.map((t) => mfaGrant(ctx, { mfa_token: t, recovery_code: rc })));
    for (const r of rs) expectNot5xx(r, 'race');
    const wins = rs.filter((r) => r.status === 200);
    expect(wins.length, rs.map((r) => r.status).join(',')).toBe(1);
    const first = wins[0];
    if (!first) throw new Error('no winner');
    const g = toGrant(ctx, first, 'the winner');
    expect(amrOf(g.access)).toContain('mfa');
    expect(amrOf(g.access)).toContain('pwd');
    const t = await mfaTokenFor(ctx, a.u);
    expectGrantRefused(await mfaGrant(ctx, { mfa_token: t, recovery_code: rc }), 'a spent recovery code');
    const st = await mfaStatus(ctx, a.grant.access);
    expect(st.json?.recovery_codes_left, seen(st)).toBe(9);
  });

  it('recovery codes: case, spaces and dashes ignored; single use; an mfa_token is single use after a success', async () => {
    const a = await totpAccount(ctx);
    const t = await mfaTokenFor(ctx, a.u);
    const mangled = (a.recoveryCodes[1] ?? '').replace(/-/g, '').toLowerCase();
    const r = await mfaGrant(ctx, { mfa_token: t, recovery_code: ` ${mangled} ` });
    toGrant(ctx, r, 'a recovery code, lower-cased, without dashes');
    const rc2 = a.recoveryCodes[2] ?? '';
    expectGrantRefused(
      await mfaGrant(ctx, { mfa_token: t, recovery_code: rc2 }),
      'the mfa_token after its success',
    );
    expectGrantRefused(
      await mfaGrant(ctx, { mfa_token: t, otp: await freshCode(a) }),
      'the mfa_token after its success, with a code',
    );
    const t2 = await mfaTokenFor(ctx, a.u);
    toGrant(
      ctx,
      await mfaGrant(ctx, { mfa_token: t2, recovery_code: rc2 }),
      'the code refused on a used token is still good',
    );
  });

  it("user A's mfa_token with user B's code → refused; A's token still works with A's code and B's code still works for B", async () => {
    const [a, b] = await Promise.all([totpAccount(ctx), totpAccount(ctx)]);
    const ta = await mfaTokenFor(ctx, a.u);
    const codeB = await freshCode(b);
    expectGrantRefused(await mfaGrant(ctx, { mfa_token: ta, otp: codeB }), "A's token with B's code");
    expectGrantRefused(
      await mfaGrant(ctx, { mfa_token: ta, recovery_code: b.recoveryCodes[0] }),
      "A's token with B's recovery code",
    );
    toGrant(ctx, await mfaGrant(ctx, { mfa_token: ta, otp: await freshCode(a) }), "A's token, A's code");
    const tb = await mfaTokenFor(ctx, b.u);
    toGrant(ctx, await mfaGrant(ctx, { mfa_token: tb, otp: codeB }), "B's code, unclaimed by A's attempt");
    const tb2 = await mfaTokenFor(ctx, b.u);
    toGrant(
      ctx,
      await mfaGrant(ctx, { mfa_token: tb2, recovery_code: b.recoveryCodes[0] }),
      "B's recovery code",
    );
  });

  it('5 wrong attempts kill the mfa_token (the right code is then refused on it, but accepted on a new one)', async () => {
    const a = await totpAccount(ctx);
    const t = await mfaTokenFor(ctx, a.u);
    const bodies: string[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await mfaGrant(ctx, { mfa_token: t, otp: wrongCode(a.secret) });
      expectGrantRefused(r, `wrong code ${i + 1}`);
      bodies.push(r.text);
    }
    expect(new Set(bodies).size, 'no attempt counter in the refusals').toBe(1);
    const code = await freshCode(a);
    expectGrantRefused(
      await mfaGrant(ctx, { mfa_token: t, otp: code }),
      'the right code on a spent mfa_token',
    );
    const t2 = await mfaTokenFor(ctx, a.u);
    toGrant(ctx, await mfaGrant(ctx, { mfa_token: t2, otp: code }), 'the same code on a new mfa_token');
  });

  it('after 10 failures the account is locked and the right code is answered exactly like a wrong one', async () => {
    const a = await totpAccount(ctx);
    const wrongReplies = [];
    for (let round = 0; round < 2; round++) {
      const t = await mfaTokenFor(ctx, a.u);
      for (let i = 0; i < 5; i++)
        wrongReplies.push(await mfaGrant(ctx, { mfa_token: t, otp: wrongCode(a.secret) }));
    }
    for (const r of wrongReplies) expectGrantRefused(r, 'a wrong code');
    const t = await mfaTokenFor(ctx, a.u);
    const fresh = await mfaTokenFor(ctx, a.u);
    const right = await mfaGrant(ctx, { mfa_token: t, otp: await freshCode(a) });
    const wrong = await mfaGrant(ctx, { mfa_token: fresh, otp: wrongCode(a.secret) });
    expectGrantRefused(right, 'the right code during the lock');
    expect(right.status).toBe(wrong.status);
    expect(right.json, 'the lock answers exactly like a wrong code').toEqual(wrong.json);
    expect(right.json).toEqual(wrongReplies[0]?.json);
    expect(right.headers.get('retry-after'), 'no Retry-After that tells the lock apart').toBe(
      wrong.headers.get('retry-after'),
    );
    expect(right.headers.get('content-type')).toBe(wrong.headers.get('content-type'));
  });

  it('mfa_token, otp and recovery_code in the URL are refused (no tokens)', async () => {
    const a = await totpAccount(ctx);
    const t = await mfaTokenFor(ctx, a.u);
    const code = totp(a.secret, stepAt() + 1);
    const all = new URLSearchParams({ grant_type: MFA_GRANT, mfa_token: t, otp: code }).toString();
    const q1 = await postForm(ctx.url(`/token?${all}`), '');
    expectTokenInputRefused(q1, 'everything in the query');
    const q2 = await postForm(ctx.url(`/token?${new URLSearchParams({ otp: code })}`), {
      grant_type: MFA_GRANT,
      mfa_token: t,
    });
    expectTokenInputRefused(q2, 'otp in the query');
    const q3 = await postForm(ctx.url(`/token?${new URLSearchParams({ mfa_token: t })}`), {
      grant_type: MFA_GRANT,
      otp: code,
    });
    expectTokenInputRefused(q3, 'mfa_token in the query');
    const q4 = await postForm(
      ctx.url(`/token?${new URLSearchParams({ recovery_code: a.recoveryCodes[0] ?? '' })}`),
      {
        grant_type: MFA_GRANT,
        mfa_token: t,
      },
    );
    expectTokenInputRefused(q4, 'recovery_code in the query');
    const g = await request(ctx.url(`/token?${all}`));
    expect(g.status, seen(g)).not.toBe(200);
    expect(g.text).not.toMatch(/access_token/);
  });

  it('unicode digits of the right code (fullwidth, Arabic-Indic) are refused; the code still works afterwards', async () => {
    const a = await totpAccount(ctx);
    await awayFromBoundary(8);
    const step = stepAt() + 1;
    const code = totp(a.secret, step);
    const variants: Array<[string, 'form' | 'json']> = [
      [toFullwidth(code), 'form'],
      [toFullwidth(code), 'json'],
      [toArabicIndic(code), 'form'],
      [toArabicIndic(code), 'json'],
      [`0${code}`, 'json'],
      [`${code}\u0000`, 'json'],
    ];
    for (const [variant, mode] of variants) {
      const t = await mfaTokenFor(ctx, a.u);
      const r = await mfaGrant(ctx, { mfa_token: t, otp: variant }, mode);
      expectNot5xx(r, `otp ${JSON.stringify(variant)} (${mode})`);
      expect(r.status, `otp ${JSON.stringify(variant)} (${mode}) must not sign in: ${seen(r)}`).not.toBe(200);
      expect(r.status, `otp ${JSON.stringify(variant)} (${mode}): ${seen(r)}`).toBeLessThan(500);
    }
    // 6 refusals: under the lock's 10, so the ASCII code must still open a session (none of the above claimed it)
    const t = await mfaTokenFor(ctx, a.u);
    toGrant(ctx, await mfaGrant(ctx, { mfa_token: t, otp: code }), 'the ASCII code after the unicode ones');
  });

  it('bad input to the MFA grant (huge, non-digits, arrays, nulls, objects, both or neither factor) → 4xx OAuth/FastAPI-shaped, never 5xx', async () => {
    const a = await totpAccount(ctx);
    const code = totp(a.secret, stepAt());
    const t = await mfaTokenFor(ctx, a.u);
    const cases: Array<Record<string, unknown>> = [
      { mfa_token: t, otp: '1'.repeat(100_000) },
      { mfa_token: t, otp: '12345a' },
      { mfa_token: t, otp: '' },
      { mfa_token: t, otp: [code] },
      { mfa_token: t, otp: null },
      { mfa_token: t, otp: { $ne: '' } },
      { mfa_token: t, otp: true },
      { mfa_token: t, otp: 1e308 },
      { mfa_token: t, recovery_code: 'x'.repeat(100_000) },
      { mfa_token: t, recovery_code: ['a', 'b'] },
      { mfa_token: t, recovery_code: null },
      { mfa_token: t, recovery_code: '\u202eABCD-EFGH' },
      { mfa_token: t, otp: code, recovery_code: a.recoveryCodes[0] },
      { mfa_token: t },
      { otp: code },
      { mfa_token: 'A'.repeat(100_000), otp: code },
      { mfa_token: [t], otp: code },
      { mfa_token: null, otp: code },
      { mfa_token: '../../etc/passwd', otp: code },
      { mfa_token: 'ünïcödé-🔑', otp: code },
      { mfa_token: t, challenge_id: 'x', webauthn_response: '{' },
    ];
    const label = (c: Record<string, unknown>, mode: string) =>
      `${mode} ${JSON.stringify(c, (_k, v) => (typeof v === 'string' && v.length > 40 ? `${v.slice(0, 12)}…(${v.length})` : v))}`;
    const attempts: Array<[string, Promise<Reply>]> = [];
    for (const c of cases) {
      attempts.push([label(c, 'json'), mfaGrant(ctx, c, 'json')]);
      if (!Object.values(c).some((v) => v !== null && typeof v === 'object')) {
        attempts.push([label(c, 'form'), mfaGrant(ctx, c, 'form')]);
      }
    }
    for (const [what, p] of attempts) expectTokenInputRefused(await p, what);
    const missing = await mfaGrant(ctx, { mfa_token: t });
    expect(missing.status, seen(missing)).toBe(400);
    expect(missing.json?.error, 'no factor at all → invalid_request').toBe('invalid_request');
    const raw = await request(ctx.url('/token'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: `{"grant_type":"${MFA_GRANT}","mfa_token":"${t}","otp":`,
    });
    expectNot5xx(raw, 'truncated JSON');
    expect(raw.status).toBeGreaterThanOrEqual(400);
  });

  it('password reset of an MFA account: no factor → second_factor_required, wrong → invalid_second_factor, token unspent; then with the code → 204 and sign-in still asks for the factor', async () => {
    const a = await totpAccount(ctx);
    expect202Empty(await forgot(ctx, a.u.email), 'forgot');
    const link = await resetLink(ctx, a.u.email);
    const np = ctx.track(strongPassword());
    const post = (body: Record<string, unknown>) =>
      request(ctx.url('/password/reset'), {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-forwarded-for': ctx.ip() },
        body: JSON.stringify({ token: link.token, new_password: np, ...body }),
      });
    const none = await post({});
    expect(none.status, seen(none)).toBe(400);
    expect(none.json?.code, seen(none)).toBe('second_factor_required');
    expect(typeof none.json?.detail).toBe('string');
    const wrong = await post({ otp: wrongCode(a.secret) });
    expect(wrong.status, seen(wrong)).toBe(400);
    expect(wrong.json?.code, seen(wrong)).toBe('invalid_second_factor');
    const wrongRc = await post({ recovery_code: 'ABCD-EFGH-JKMN-PQRS' });
    expect(wrongRc.json?.code, seen(wrongRc)).toBe('invalid_second_factor');
    // nothing changed: the old password still leads to mfa_required, the new one is refused
    await mfaTokenFor(ctx, a.u);
    expectGrantRefused(
      await passwordGrant(ctx, { username: a.u.username, password: np }),
      'the new password before the reset',
    );
    const ok = await post({ otp: await freshCode(a) });
    expect(ok.status, `the same token with the factor: ${seen(ok)}`).toBe(204);
    expectGrantRefused(await passwordGrant(ctx, a.u), 'the old password after the reset');
    const t = expectMfaRequired(
      ctx,
      await passwordGrant(ctx, { username: a.u.username, password: np }),
      'new password',
    );
    toGrant(
      ctx,
      await mfaGrant(ctx, { mfa_token: t, recovery_code: a.recoveryCodes[3] }),
      'factor after the reset',
    );
  });

  it('password reset with a recovery code works and spends it', async () => {
    const a = await totpAccount(ctx);
    expect202Empty(await forgot(ctx, a.u.email), 'forgot');
    const link = await resetLink(ctx, a.u.email);
    const np = ctx.track(strongPassword());
    const rc = a.recoveryCodes[4] ?? '';
    const r = await request(ctx.url('/password/reset'), {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-forwarded-for': ctx.ip() },
      body: JSON.stringify({ token: link.token, new_password: np, recovery_code: rc }),
    });
    expect(r.status, seen(r)).toBe(204);
    const t = expectMfaRequired(
      ctx,
      await passwordGrant(ctx, { username: a.u.username, password: np }),
      'after',
    );
    expectGrantRefused(
      await mfaGrant(ctx, { mfa_token: t, recovery_code: rc }),
      'the recovery code used by the reset',
    );
  });

  it('regenerating recovery codes needs password + code; old codes die; new ones work; a mail is sent', async () => {
    const a = await totpAccount(ctx);
    await ctx.sink.next({ to: a.u.email, match: hasNoLink, timeoutMs: 20_000 }); // the enrolment's
    const noOtp = await regenerateCodes(ctx, a.grant.access, { password: a.u.password });
    expect(noOtp.status, seen(noOtp)).toBe(401);
    expect(noOtp.json?.recovery_codes).toBeUndefined();
    // a wrong password with an already claimed code: nothing new to claim whichever the server checks first
    const badPw = await regenerateCodes(ctx, a.grant.access, {
      password: strongPassword(),
      otp: totp(a.secret, a.lastStep),
    });
    expect(badPw.status, seen(badPw)).toBe(400);
    expect(['invalid_password', 'invalid_second_factor']).toContain(badPw.json?.code);
    expect(badPw.json?.recovery_codes).toBeUndefined();
    const r = await regenerateCodes(ctx, a.grant.access, { password: a.u.password, otp: await freshCode(a) });
    expect(r.status, seen(r)).toBe(200);
    const codes = r.json.recovery_codes as string[];
    for (const c of codes) ctx.track(c);
    expect(codes.length).toBe(10);
    for (const c of codes) expect(a.recoveryCodes).not.toContain(c);
    const t = await mfaTokenFor(ctx, a.u);
    expectGrantRefused(
      await mfaGrant(ctx, { mfa_token: t, recovery_code: a.recoveryCodes[5] }),
      'an old code',
    );
    toGrant(ctx, await mfaGrant(ctx, { mfa_token: t, recovery_code: codes[0] }), 'a new code');
    const mail = await ctx.sink.next({ to: a.u.email, match: hasNoLink, timeoutMs: 20_000 });
    for (const c of codes) expect(mail.raw, 'the mail carries no code').not.toContain(c);
  });

  it('removing the factor needs password + factor; then /token issues tokens again, codes are gone, a mail is sent', async () => {
    const a = await totpAccount(ctx);
    await ctx.sink.next({ to: a.u.email, match: hasNoLink, timeoutMs: 20_000 });
    const g = await mfaLoginWithCode(ctx, a);
    const onlyPw = await deleteTotp(ctx, g.access, { password: a.u.password });
    // AUTH-FLOWS.md §7.3: a removal without its recent authentication is RFC 9470's 401, the session untouched.
    expect(onlyPw.status, seen(onlyPw)).toBe(401);
    expect(onlyPw.headers.get('www-authenticate')).toMatch(/error="insufficient_user_authentication"/);
    const onlyCode = await deleteTotp(ctx, g.access, { recovery_code: a.recoveryCodes[0] });
    expect(onlyCode.status, seen(onlyCode)).toBe(401);
    const badPw = await deleteTotp(ctx, g.access, {
      password: strongPassword(),
      recovery_code: a.recoveryCodes[0],
    });
    expect(badPw.status, seen(badPw)).toBe(400);
    expect(badPw.json?.code).toBe('invalid_password');
    const badCode = await deleteTotp(ctx, g.access, { password: a.u.password, otp: wrongCode(a.secret) });
    expect(badCode.status, seen(badCode)).toBe(400);
    expect(badCode.json?.code).toBe('invalid_second_factor');
    const st = await mfaStatus(ctx, g.access);
    expect(st.json?.totp?.status, 'still active after the refusals').toBe('active');
    const anon = await request(ctx.url('/users/me/mfa/totp'), {
      method: 'DELETE',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ password: a.u.password, recovery_code: a.recoveryCodes[0] }),
    });
    expect(anon.status, seen(anon)).toBe(401);
    // another code than the refused requests carried, in case a refusal spent that one
    const ok = await deleteTotp(ctx, g.access, { password: a.u.password, recovery_code: a.recoveryCodes[1] });
    expect(ok.status, seen(ok)).toBe(204);
    const after = await mfaStatus(ctx, g.access);
    expect(after.json, seen(after)).toMatchObject({ totp: null, recovery_codes_left: 0 });
    const plain = toGrant(ctx, await passwordGrant(ctx, a.u), 'password grant after removal');
    expect(amrOf(plain.access)).toEqual(['pwd']);
    const mail = await ctx.sink.next({ to: a.u.email, match: hasNoLink, timeoutMs: 20_000 });
    expect(mail.raw).not.toContain(a.secret);
  });

  it('±30 s accepted, ±60 s refused, and an older step dies once a newer one is used (the early account)', async () => {
    const a = aged;
    if (!a) throw new Error('the early account was not enrolled');
    await untilStep(a.lastStep + 2); // its confirm step is now at least two steps back
    await awayFromBoundary(8);
    const now = stepAt();
    const t = await mfaTokenFor(ctx, a.u);
    expectGrantRefused(await mfaGrant(ctx, { mfa_token: t, otp: totp(a.secret, now + 2) }), '+60 s');
    expectGrantRefused(await mfaGrant(ctx, { mfa_token: t, otp: totp(a.secret, now - 2) }), '-60 s');
    toGrant(ctx, await mfaGrant(ctx, { mfa_token: t, otp: totp(a.secret, now - 1) }), '-30 s');
    const t2 = await mfaTokenFor(ctx, a.u);
    toGrant(ctx, await mfaGrant(ctx, { mfa_token: t2, otp: totp(a.secret, now + 1) }), '+30 s');
    const t3 = await mfaTokenFor(ctx, a.u);
    expectGrantRefused(
      await mfaGrant(ctx, { mfa_token: t3, otp: totp(a.secret, now) }),
      'the current step after the next one was used',
    );
  });

  it('the secret, the recovery codes, the mfa_tokens and the tokens never reach the logs', () => {
    const secrets = [...ctx.secrets].filter((s) => /^[A-Z2-7]{32,}=*$/.test(s));
    expect(secrets.length, 'no TOTP secret was handed out: the check would be vacuous').toBeGreaterThan(0);
    // a secret in any form an implementation might log: base32, hex of its bytes
    for (const s of [...ctx.secrets]) {
      if (/^[A-Z2-7]{32,}$/.test(s)) ctx.track(base32Decode(s).toString('hex'));
    }
    expectLogsFreeOf(ctx);
    const logs = ctx.server.output();
    expect(logs, 'no otpauth URI in the logs').not.toMatch(/otpauth:\/\//);
  });
});
