/**
 * Issue 13, adversarial and black-box, on SQLite and PostgreSQL: email verification, pre-account hijacking,
 * REQUIRE_VERIFIED_EMAIL and the email change, against a real SMTP server (support/smtp-sink.ts). Written from the
 * issue text and AUTH-FLOWS.md §0, §1, §7.1 alone; the implementation is not read. Every assertion prints what it saw.
 *
 * Each dialect gets two servers: one with the defaults (throttling on), and one with RATE_LIMITS=off for the flows
 * that need several mails to one address within a minute (a new token voiding the older one, an email change's
 * three mails), which the "1 mail per address per 60 s" limit would otherwise refuse.
 */
import { describe, expect, it, vi } from 'vitest';
import { expectAccessRefused, expectInvalidGrant, expectRefreshDead } from './support/assertions.ts';
import {
  expectLogsFreeOf,
  getWithToken,
  postForm,
  registerUser,
  request,
  strongPassword,
  uniqueName,
} from './support/client.ts';
import { loginGrant } from './support/grants.ts';
import {
  askVerification,
  claims,
  databaseText,
  expect202,
  expect202Empty,
  expectInvalidTokenBody,
  expectNoMailTo,
  expectNoSignIn,
  expectNot5xx,
  forgot,
  freshEmail,
  getMe,
  hasNoLink,
  type MailContext,
  newAccount,
  patchMe,
  RESET_PATH,
  resendVerification,
  resetLink,
  resetPassword,
  seen,
  useMailServer,
  VERIFY_PATH,
  verifyEmail,
  verifyLink,
} from './support/issue13.ts';
import { DIALECTS } from './support/server.ts';

vi.setConfig({ testTimeout: 90_000, hookTimeout: 90_000 });

async function expectVerifiedFlag(
  ctx: MailContext,
  access: string,
  value: boolean,
  what: string,
): Promise<void> {
  expect(claims(access).email_verified, `${what}: the access token's email_verified claim`).toBe(value);
  const me = await getMe(ctx, access);
  expect(me.status, `${what}: GET /users/me: ${seen(me)}`).toBe(200);
  expect(me.json?.email_verified, `${what}: GET /users/me email_verified: ${seen(me)}`).toBe(value);
}

describe.each(DIALECTS)('issue 13, email verification (%s)', (dialect) => {
  const ctx = useMailServer(dialect);

  it('the seed flow still works unverified: register → /token → 200, email_verified false in the token and /users/me', async () => {
    const a = await newAccount(ctx);
    await expectVerifiedFlag(ctx, a.grant.access, false, 'fresh account');
  });

  it('POST /users/me/email/verification → 202, one mail with a PUBLIC_URL link, token in the fragment; verify → 200, signs nobody in; new tokens say verified', async () => {
    const a = await newAccount(ctx);
    const asked = await askVerification(ctx, a.grant.access);
    expect202(asked, 'ask for a verification mail');
    expectNoSignIn(asked, 'ask for a verification mail');
    const link = await verifyLink(ctx, a.u.email);
    expect(link.url.pathname).toBe(VERIFY_PATH);
    const v = await verifyEmail(ctx, link.token);
    expect(v.status, `verify: ${seen(v)}`).toBe(200);
    expectNoSignIn(v, 'verify');
    const after = await loginGrant(ctx, a.u);
    await expectVerifiedFlag(ctx, after.access, true, 'after verifying, a new login');
    const extra = await ctx.sink.untakenAfter(a.u.email, 1000);
    expect(
      extra.map((m) => m.subject),
      'one request, one mail',
    ).toEqual([]);
  });

  it('without a Bearer token, POST /users/me/email/verification is 401 and mails nothing', async () => {
    const email = freshEmail();
    await registerUser(ctx, { username: uniqueName('e'), email });
    const r = await askVerification(ctx, 'not-a-token');
    expect(r.status, `bad token: ${seen(r)}`).toBe(401);
    await expectNoMailTo(ctx, email, 'verification asked without a valid token');
  });

  it('verifying ends every session that existed: their access tokens 401, their refresh tokens invalid_grant', async () => {
    const a = await newAccount(ctx);
    const second = await loginGrant(ctx, a.u);
    expect202(await askVerification(ctx, a.grant.access), 'ask');
    const link = await verifyLink(ctx, a.u.email);
    const v = await verifyEmail(ctx, link.token);
    expect(v.status, `verify: ${seen(v)}`).toBe(200);
    for (const [name, g] of [
      ['the session that asked', a.grant],
      ['another session', second],
    ] as const) {
      await expectAccessRefused(ctx, g.access, `${name}, after verifying`);
      await expectRefreshDead(ctx, g.refresh, `${name}, after verifying`);
    }
  });

  it('a used token is refused: 400 {"error":"invalid_token","detail":...}, and changes nothing', async () => {
    const a = await newAccount(ctx);
    expect202(await askVerification(ctx, a.grant.access), 'ask');
    const link = await verifyLink(ctx, a.u.email);
    expect((await verifyEmail(ctx, link.token)).status, 'first use').toBe(200);
    expectInvalidTokenBody(await verifyEmail(ctx, link.token), 'second use');
    expectInvalidTokenBody(await verifyEmail(ctx, link.token), 'third use, from another address');
  });

  it('two (and six) parallel uses of one token: exactly one 200, the rest 400 invalid_token', async () => {
    for (const n of [2, 6]) {
      const a = await newAccount(ctx);
      expect202(await askVerification(ctx, a.grant.access), 'ask');
      const link = await verifyLink(ctx, a.u.email);
      const replies = await Promise.all(Array.from({ length: n }, () => verifyEmail(ctx, link.token)));
      const statuses = replies.map((r) => r.status);
      expect(statuses.filter((s) => s === 200).length, `${n} parallel uses: ${statuses.join(',')}`).toBe(1);
      for (const r of replies.filter((x) => x.status !== 200))
        expectInvalidTokenBody(r, `${n} parallel, a loser`);
    }
  });

  it('garbage, empty, very long, Unicode and mistyped tokens: 400 or 422, never 5xx; a near miss does not consume the real token', async () => {
    const a = await newAccount(ctx);
    expect202(await askVerification(ctx, a.grant.access), 'ask');
    const link = await verifyLink(ctx, a.u.email);
    const t = link.token;
    const flip = (s: string, i: number) => s.slice(0, i) + (s[i] === 'A' ? 'B' : 'A') + s.slice(i + 1);
    const tries: unknown[] = [
      '',
      ' ',
      'a',
      'x'.repeat(10_000),
      '\u{1F600}'.repeat(64),
      'ẗöḱëṅ'.repeat(9),
      '\u0000',
      `${t}\u0000`,
      "' OR 1=1 --",
      '%00',
      `token=${t}`,
      `#token=${t}`,
      flip(t, 0),
      flip(t, t.length - 1),
      t.slice(0, -1),
      `${t}A`,
      t.toUpperCase() === t ? t.toLowerCase() : t.toUpperCase(),
      123,
      null,
      true,
      [t],
      { token: t },
    ];
    for (const token of tries) {
      const r = await verifyEmail(ctx, token);
      const what = `token ${JSON.stringify(token).slice(0, 60)}`;
      expectNot5xx(r, what);
      expect([400, 422], `${what}: ${seen(r)}`).toContain(r.status);
    }
    for (const body of ['', '{}', 'null', '[]', '{"token":', '{"tok":"x"}']) {
      const r = await request(ctx.url('/email/verify'), {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-forwarded-for': ctx.ip() },
        body,
      });
      expect(r.status >= 400 && r.status < 500, `body ${JSON.stringify(body)}: ${seen(r)}`).toBe(true);
    }
    const v = await verifyEmail(ctx, t);
    expect(v.status, `the real token after all those near misses: ${seen(v)}`).toBe(200);
  });

  it('a verification token is a credential for nothing else: not a reset token, not a Bearer token; a reset token does not verify', async () => {
    const a = await newAccount(ctx);
    expect202(await askVerification(ctx, a.grant.access), 'ask for verification');
    const vlink = await verifyLink(ctx, a.u.email);
    const b = await newAccount(ctx);
    expect202Empty(await forgot(ctx, b.u.email), 'forgot for b');
    const rlink = await resetLink(ctx, b.u.email);
    expect(rlink.url.pathname).toBe(RESET_PATH);

    expectInvalidTokenBody(
      await resetPassword(ctx, vlink.token, strongPassword()),
      'verification token at /password/reset',
    );
    expectInvalidTokenBody(await verifyEmail(ctx, rlink.token), 'reset token at /email/verify');
    for (const token of [vlink.token, rlink.token]) {
      const r = await getWithToken(ctx.url('/users/me'), token);
      expect(r.status, `a mailed token as Bearer: ${seen(r)}`).toBe(401);
    }
    expectInvalidTokenBody(await verifyEmail(ctx, a.grant.access), 'an access token at /email/verify');
    expectInvalidTokenBody(await verifyEmail(ctx, a.grant.refresh), 'a refresh token at /email/verify');
    // Neither was consumed by the wrong route.
    expect((await verifyEmail(ctx, vlink.token)).status, 'the verification token still verifies').toBe(200);
    const np = ctx.track(strongPassword());
    const r = await resetPassword(ctx, rlink.token, np);
    expect(r.status, `the reset token still resets: ${seen(r)}`).toBe(204);
  });

  it('resend answers 202 alike for an unknown and an unverified address (and for malformed input, or a 422); a mail only to the unverified one', async () => {
    const unverified = freshEmail('unv');
    await registerUser(ctx, { username: uniqueName('e'), email: unverified });
    const unknown = freshEmail('nobody');
    const rUnv = await resendVerification(ctx, unverified);
    const rUnk = await resendVerification(ctx, unknown);
    expect202(rUnv, 'resend, unverified');
    expect202(rUnk, 'resend, unknown');
    expect(rUnk.text, 'identical bodies').toBe(rUnv.text);
    expect(rUnk.headers.get('content-type'), 'identical content types').toBe(
      rUnv.headers.get('content-type'),
    );
    const link = await verifyLink(ctx, unverified);
    expect((await verifyEmail(ctx, link.token)).status, 'the resent link verifies').toBe(200);
    for (const input of ['not-an-email', '', 'a@b', `${'x'.repeat(300)}@example.com`, 42, null]) {
      const r = await resendVerification(ctx, input);
      expect([202, 422], `resend ${JSON.stringify(input).slice(0, 40)}: ${seen(r)}`).toContain(r.status);
    }
    await expectNoMailTo(ctx, unknown, 'resend to an unknown address');
  });

  it('pre-account hijack: the attacker registers the victim’s address and keeps a session; the victim verifies through resend; the attacker’s tokens die', async () => {
    const victim = freshEmail('victim');
    const attacker = await registerUser(ctx, { username: uniqueName('atk'), email: victim });
    const held = await loginGrant(ctx, attacker);
    const held2 = await loginGrant(ctx, attacker);
    expect202(await resendVerification(ctx, victim), 'the victim asks for a link');
    const link = await verifyLink(ctx, victim);
    const v = await verifyEmail(ctx, link.token);
    expect(v.status, `the victim verifies: ${seen(v)}`).toBe(200);
    expectNoSignIn(v, 'the victim verifies');
    for (const g of [held, held2]) {
      await expectAccessRefused(ctx, g.access, "the attacker's access token after the victim verified");
      await expectRefreshDead(ctx, g.refresh, "the attacker's refresh token after the victim verified");
    }
  });

  it('the raw token is stored nowhere in the database (only its hash; the outbox sealed), before and after the mail is sent', async () => {
    const a = await newAccount(ctx);
    expect202(await askVerification(ctx, a.grant.access), 'ask');
    const link = await verifyLink(ctx, a.u.email);
    const text = await databaseText(ctx.db);
    expect(text.length, 'the scan read something').toBeGreaterThan(100);
    expect(text.includes(link.token), 'the raw verification token is stored in the database').toBe(false);
    expect(text.includes(link.href), 'the link is stored in the database').toBe(false);
    expect(text.includes(a.u.email), 'sanity: the scan sees the users table').toBe(true);
  });

  it('no mailed token, password or JWT appears in the server log', () => {
    expectLogsFreeOf(ctx);
  });
});

describe.each(DIALECTS)(
  'issue 13, verification with RATE_LIMITS=off: several mails to one address (%s)',
  (dialect) => {
    const ctx = useMailServer(dialect, { env: { RATE_LIMITS: 'off' } });

    it('a new verification token voids the older one', async () => {
      const a = await newAccount(ctx);
      expect202(await askVerification(ctx, a.grant.access), 'first ask');
      const first = await verifyLink(ctx, a.u.email);
      expect202(await askVerification(ctx, a.grant.access), 'second ask');
      const second = await verifyLink(ctx, a.u.email);
      expect(second.token, 'a fresh token per mail').not.toBe(first.token);
      expectInvalidTokenBody(await verifyEmail(ctx, first.token), 'the older token');
      expect((await verifyEmail(ctx, second.token)).status, 'the newer token').toBe(200);
    });

    it('resend answers a verified address exactly as an unknown one, and mails it nothing', async () => {
      const a = await newAccount(ctx);
      expect202(await askVerification(ctx, a.grant.access), 'ask');
      expect((await verifyEmail(ctx, (await verifyLink(ctx, a.u.email)).token)).status, 'verify').toBe(200);
      const rVer = await resendVerification(ctx, a.u.email);
      const rUnk = await resendVerification(ctx, freshEmail('nobody'));
      expect202(rVer, 'resend, verified');
      expect202(rUnk, 'resend, unknown');
      expect(rVer.text, 'identical bodies').toBe(rUnk.text);
      await expectNoMailTo(ctx, a.u.email, 'resend to a verified address');
    });

    it('email change: PATCH keeps the old address until the link mailed to the new one is used; the old one gets a notice without a link; the old link dies with the change', async () => {
      const oldEmail = freshEmail('old');
      const newEmail = freshEmail('new');
      const a = await newAccount(ctx, oldEmail);
      expect202(await askVerification(ctx, a.grant.access), 'a link for the old address');
      const oldLink = await verifyLink(ctx, oldEmail);

      const p = await patchMe(ctx, a.grant.access, { email: newEmail, current_password: a.u.password });
      expect([200, 202], `PATCH /users/me {email}: ${seen(p)}`).toContain(p.status);
      const me = await getMe(ctx, a.grant.access);
      expect(me.json?.email, `until verified, GET /users/me keeps the old address: ${seen(me)}`).toBe(
        oldEmail,
      );

      const newLink = await verifyLink(ctx, newEmail);
      const notice = await ctx.sink.next({ to: oldEmail, match: hasNoLink, timeoutMs: 30_000 });
      expect(notice.text, 'the notice to the old address carries no token').not.toContain('#token=');
      expect(notice.text + notice.html, 'the notice carries no link to verify the new address').not.toContain(
        newLink.token,
      );

      // The pending address is not yet the account's: no reset mail goes to it.
      expect202Empty(await forgot(ctx, newEmail), 'forgot for the pending address');
      await expectNoMailTo(ctx, newEmail, 'forgot for a pending address');

      const v = await verifyEmail(ctx, newLink.token);
      expect(v.status, `the new address's link: ${seen(v)}`).toBe(200);
      // The old address is told that the change happened (a notice, no link), and then nothing more.
      const changed = await ctx.sink.next({ to: oldEmail, timeoutMs: 30_000 });
      expect(changed.text, 'the change notice to the old address').not.toMatch(/#token=/);
      const g = await loginGrant(ctx, a.u);
      const after = await getMe(ctx, g.access);
      expect(after.json?.email, `after verifying: ${seen(after)}`).toBe(newEmail);
      expect(after.json?.email_verified, `after verifying: ${seen(after)}`).toBe(true);
      expect(claims(g.access).email_verified, 'the new token').toBe(true);
      // A link for the old address lives beside the change's link (one voids only links to its own address), and dies
      // once the account has left that address.
      expectInvalidTokenBody(await verifyEmail(ctx, oldLink.token), 'the link issued for the old address');
      const still = await getMe(ctx, g.access);
      expect(still.json?.email, `the old link changed nothing: ${seen(still)}`).toBe(newEmail);

      // The old address no longer recovers the account; the new one does.
      expect202Empty(await forgot(ctx, oldEmail), 'forgot for the old address');
      await expectNoMailTo(ctx, oldEmail, 'forgot for the address the account left');
      expect202Empty(await forgot(ctx, newEmail), 'forgot for the new address');
      await resetLink(ctx, newEmail);
    });

    it('two email changes in a row: only the latest pending address can be verified', async () => {
      const a = await newAccount(ctx);
      const first = freshEmail('first');
      const second = freshEmail('second');
      for (const email of [first, second]) {
        const p = await patchMe(ctx, a.grant.access, { email, current_password: a.u.password });
        expect([200, 202], `PATCH to ${email}: ${seen(p)}`).toContain(p.status);
      }
      const me = await getMe(ctx, a.grant.access);
      expect(me.json?.email, `both changes are pending: ${seen(me)}`).toBe(a.u.email);
      const l1 = await verifyLink(ctx, first);
      const l2 = await verifyLink(ctx, second);
      expectInvalidTokenBody(await verifyEmail(ctx, l1.token), 'the link to the abandoned address');
      expect((await verifyEmail(ctx, l2.token)).status, 'the latest address').toBe(200);
      const g = await loginGrant(ctx, a.u);
      expect((await getMe(ctx, g.access)).json?.email).toBe(second);
    });

    it('no mailed token, password or JWT appears in the server log', () => {
      expectLogsFreeOf(ctx);
    });
  },
);

describe.each(DIALECTS)('issue 13, REQUIRE_VERIFIED_EMAIL=true (%s)', (dialect) => {
  const ctx = useMailServer(dialect, { env: { REQUIRE_VERIFIED_EMAIL: 'true' } });
  const login = (username: string, password: string) =>
    postForm(ctx.url('/token'), { grant_type: 'password', username, password });

  it('unverified: the right password → 400 invalid_grant "email not verified"; a wrong one → the ordinary answer; after verifying, login works', async () => {
    const u = await registerUser(ctx, { username: uniqueName('rq'), email: freshEmail('rq') });
    const right = await login(u.username, u.password);
    expectInvalidGrant(right, 'unverified, right password');
    expectNoSignIn(right, 'unverified, right password');
    expect(`${right.json?.error_description ?? ''} ${right.json?.detail ?? ''}`, seen(right)).toMatch(
      /e-?mail.*not.*verified|not.*verified.*e-?mail/i,
    );
    const wrong = await login(u.username, `${u.password}x`);
    expectInvalidGrant(wrong, 'unverified, wrong password');
    expect(wrong.json?.detail, seen(wrong)).toBe('Incorrect username or password');
    expect(wrong.text, 'a wrong password must not learn the account is unverified').not.toMatch(/verif/i);
    const unknown = await login(uniqueName('nobody'), u.password);
    expect(unknown.text, 'a wrong password answers as an unknown user').toBe(wrong.text);

    expect202(await resendVerification(ctx, u.email), 'resend');
    const v = await verifyEmail(ctx, (await verifyLink(ctx, u.email)).token);
    expect(v.status, `verify: ${seen(v)}`).toBe(200);
    const ok = await login(u.username, u.password);
    expect(ok.status, `after verifying: ${seen(ok)}`).toBe(200);
    ctx.track(ok.json.access_token);
    expect(claims(ok.json.access_token).email_verified).toBe(true);
  });

  it('a password reset also verifies: the unverified account can log in with the new password', async () => {
    const u = await registerUser(ctx, { username: uniqueName('rq'), email: freshEmail('rq') });
    expect202Empty(await forgot(ctx, u.email), 'forgot');
    const link = await resetLink(ctx, u.email);
    const np = ctx.track(strongPassword());
    expect((await resetPassword(ctx, link.token, np)).status, 'reset').toBe(204);
    const ok = await login(u.username, np);
    expect(ok.status, `login after the reset: ${seen(ok)}`).toBe(200);
    ctx.track(ok.json.access_token);
  });

  it('no mailed token, password or JWT appears in the server log', () => {
    expectLogsFreeOf(ctx);
  });
});
