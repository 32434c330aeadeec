import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Dialect } from '../../src/db/schema.ts';
import { buildTestApp, registerUser, STRONG_PASSWORD, type TestApp } from '../support/build-test-app.ts';
import { dialects } from '../support/dialects.ts';
import { type SmtpInbox, startSmtpInbox } from '../support/smtp-inbox.ts';

const PUBLIC_URL = 'https://id.example.com';
const LINK = /https:\/\/id\.example\.com\/account\/(verify-email|reset-password)#token=([A-Za-z0-9_-]{43})/;

// End to end through a real SMTP server: the request, the outbox, the sender, the mail, the link, the token.
describe.each(dialects)('email verification and password reset through SMTP on %s', (dialect: Dialect) => {
  let inbox: SmtpInbox;
  let t: TestApp;
  beforeAll(async () => {
    inbox = await startSmtpInbox();
    t = await buildTestApp(dialect, { env: { SMTP_URL: inbox.url, PUBLIC_URL } });
  });
  afterAll(async () => {
    await t.close();
    await inbox.stop();
  });

  const linkIn = async (to: string) => {
    const mail = await inbox.next({ to, timeoutMs: 10_000 });
    const match = LINK.exec(mail.text);
    expect(match, mail.text).not.toBeNull();
    expect(mail.subject).not.toContain(match?.[2]);
    return { page: match?.[1], token: match?.[2] ?? '' };
  };
  const login = (username: string, password: string) =>
    t.app.inject({ method: 'POST', url: '/token', payload: { username, password } });

  it('register, mail, verify', async () => {
    const user = await registerUser(t.app, { username: 'smtp-verify', email: 'smtp-verify@example.com' });
    const tokens = (await login(user.username, STRONG_PASSWORD)).json();
    const asked = await t.app.inject({
      method: 'POST',
      url: '/users/me/email/verification',
      headers: { authorization: `Bearer ${tokens.access_token}`, host: 'evil.test' },
    });
    expect(asked.statusCode).toBe(202);
    const { page, token } = await linkIn(user.email);
    expect(page).toBe('verify-email');
    const verified = await t.app.inject({ method: 'POST', url: '/email/verify', payload: { token } });
    expect(verified.statusCode).toBe(200);
    expect(verified.json()).toEqual({ email: user.email, email_verified: true });
  });

  it('mails an address on an IDN domain: the A-label for an ASCII local part, UTF-8 with SMTPUTF8 for one beyond ASCII', async () => {
    const ask = async (username: string, email: string) => {
      const user = await registerUser(t.app, { username, email });
      const tokens = (await login(user.username, STRONG_PASSWORD)).json();
      const asked = await t.app.inject({
        method: 'POST',
        url: '/users/me/email/verification',
        headers: { authorization: `Bearer ${tokens.access_token}` },
      });
      expect(asked.statusCode).toBe(202);
      // smtp-server reports an A-label decoded; the commands show what went over the wire.
      const mail = await inbox.next({ to: email.toLowerCase(), timeoutMs: 10_000 });
      const token = LINK.exec(mail.text)?.[2] ?? '';
      const verified = await t.app.inject({ method: 'POST', url: '/email/verify', payload: { token } });
      expect(verified.statusCode, verified.body).toBe(200);
      expect(verified.json()).toEqual({ email, email_verified: true });
      return inbox.commands().filter((line) => line.includes(username));
    };
    expect(await ask('smtp-idn', 'smtp-idn@bücher.de')).toEqual(['RCPT TO:<smtp-idn@xn--bcher-kva.de>']);
    expect(await ask('smtp-josé', 'smtp-josé@bücher.de')).toEqual(['RCPT TO:<smtp-josé@bücher.de>']);
    const mailFrom = inbox.commands().filter((line) => line.startsWith('MAIL FROM'));
    expect(mailFrom.at(-1)).toMatch(/ SMTPUTF8/);
  });

  it('forgot, mail, reset: old sessions 401, the new password logs in, and no mail for an unknown address', async () => {
    const user = await registerUser(t.app, { username: 'smtp-reset', email: 'smtp-reset@example.com' });
    const before = (await login(user.username, STRONG_PASSWORD)).json();
    const forgot = (email: string) =>
      t.app.inject({ method: 'POST', url: '/password/forgot', payload: { email } });
    expect((await forgot('smtp-nobody@example.com')).statusCode).toBe(202);
    expect((await forgot(user.email)).statusCode).toBe(202);
    const { page, token } = await linkIn(user.email);
    expect(page).toBe('reset-password');
    const reset = await t.app.inject({
      method: 'POST',
      url: '/password/reset',
      payload: { token, new_password: 'a brand new passphrase here' },
    });
    expect(reset.statusCode).toBe(204);
    const me = await t.app.inject({
      method: 'GET',
      url: '/users/me',
      headers: { authorization: `Bearer ${before.access_token}` },
    });
    expect(me.statusCode).toBe(401);
    expect((await login(user.username, 'a brand new passphrase here')).statusCode).toBe(200);
    const notice = await inbox.next({ to: user.email, timeoutMs: 10_000 });
    expect(LINK.test(notice.text)).toBe(false);
    expect(inbox.all().filter((mail) => mail.to.includes('smtp-nobody@example.com'))).toEqual([]);
  });
});
