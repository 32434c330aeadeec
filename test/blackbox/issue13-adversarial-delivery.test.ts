/**
 * Issue 13, adversarial and black-box, on SQLite and PostgreSQL: the outbox and its delivery. An SMTP outage (202
 * still, delivered once the SMTP server is back on its port), two instances sending each mail once, the embedded
 * default without SMTP_URL (mails stay in the outbox; `gatehouse mail list` / `mail show ID` print them), the start-up
 * refusals (SMTP_URL without PUBLIC_URL), MAIL_FROM, and tokens kept out of the logs.
 */
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { expectLogsFreeOf, postForm, registerUser, strongPassword, uniqueName } from './support/client.ts';
import {
  cliSeen,
  expect202Empty,
  forgot,
  freshEmail,
  freshIp,
  isResetMail,
  linkIn,
  linksIn,
  type MailContext,
  newAccount,
  PUBLIC_URL,
  RESET_PATH,
  resetLink,
  resetPassword,
  runGatehouse,
  seen,
  useMailServer,
} from './support/issue13.ts';
import {
  createDatabase,
  DIALECTS,
  type RunningServer,
  runUntilExit,
  startServer,
  type TestDatabase,
} from './support/server.ts';
import { SmtpSink } from './support/smtp-sink.ts';

vi.setConfig({ testTimeout: 120_000, hookTimeout: 90_000 });

const MAIL_FROM = 'Gatehouse <no-reply@mail.gatehouse.test>';

function logLines(output: string): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const line of output.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // a partial line
    }
  }
  return out;
}

describe.each(DIALECTS)('issue 13, delivery through SMTP (%s)', (dialect) => {
  const ctx = useMailServer(dialect, { env: { MAIL_FROM } });

  it('MAIL_FROM is the sender, in the From header and the envelope; a plain-text and an HTML body', async () => {
    const a = await newAccount(ctx);
    expect202Empty(await forgot(ctx, a.u.email), 'forgot');
    const link = await resetLink(ctx, a.u.email);
    expect(link.mail.from, 'From header').toEqual(['no-reply@mail.gatehouse.test']);
    expect(link.mail.envelopeFrom, 'MAIL FROM').toBe('no-reply@mail.gatehouse.test');
    expect(link.mail.text.length, 'plain-text body').toBeGreaterThan(0);
    expect(link.mail.html.length, 'HTML body').toBeGreaterThan(0);
  });

  it('SMTP server stopped: forgot still 202 at once; the mail arrives, once, after the server is back on its port', async () => {
    const a = await newAccount(ctx);
    await ctx.sink.stop();
    try {
      const t0 = performance.now();
      const r = await forgot(ctx, a.u.email);
      const ms = performance.now() - t0;
      expect202Empty(r, 'forgot during the outage');
      expect(ms, 'the answer must not wait for SMTP').toBeLessThan(3000);
      // Let the outbox fail at least once against the closed port.
      await new Promise((res) => setTimeout(res, 3000));
    } finally {
      await ctx.sink.restart();
    }
    // The issue asks for retries with back-off; 60 s after the SMTP server is back is the bound the brief sets.
    const link = await resetLink(ctx, a.u.email, 65_000);
    expect(link.url.pathname).toBe(RESET_PATH);
    const dup = await ctx.sink.untakenAfter(a.u.email, 4000);
    expect(
      dup.map((m) => m.subject),
      'the mail is sent once',
    ).toEqual([]);
    const np = ctx.track(strongPassword());
    expect((await resetPassword(ctx, link.token, np)).status, 'the delayed link works').toBe(204);
  });

  it('no mailed token, password or JWT appears in the server log (outage included)', () => {
    expectLogsFreeOf(ctx);
  });
});

describe.each(DIALECTS)('issue 13, two instances on one database send each mail once (%s)', (dialect) => {
  let sink: SmtpSink | undefined;
  let db: TestDatabase | undefined;
  const servers: RunningServer[] = [];
  const secrets = new Set<string>();
  beforeAll(async () => {
    sink = await SmtpSink.start();
    db = await createDatabase(dialect);
    const env = { PUBLIC_URL, TRUST_PROXY: 'loopback', SMTP_URL: sink.url };
    servers.push(await startServer({ databaseUrl: db.url, env }));
    servers.push(await startServer({ databaseUrl: db.url, env }));
  }, 90_000);
  afterAll(async () => {
    try {
      await Promise.all(servers.map((s) => s.stop()));
    } finally {
      await sink?.stop();
      await db?.drop();
    }
  }, 40_000);

  it('12 forgot requests spread over both instances: 12 mails, one per address, none twice', async () => {
    const s = sink as SmtpSink;
    const emails: string[] = [];
    const on = (i: number) => ({ url: (p: string) => (servers[i % 2] as RunningServer).url(p) });
    for (let i = 0; i < 12; i += 1) {
      const email = freshEmail('two');
      await registerUser({ url: on(i).url, track: (x) => x }, { username: uniqueName('two'), email });
      emails.push(email);
    }
    const replies = await Promise.all(
      emails.map((email, i) =>
        fetch(on(i).url('/password/forgot'), {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-forwarded-for': freshIp() },
          body: JSON.stringify({ email }),
        }),
      ),
    );
    for (const r of replies) {
      expect(r.status).toBe(202);
      await r.arrayBuffer();
    }
    for (const email of emails) {
      const m = await s.next({ to: email, match: isResetMail, timeoutMs: 45_000 });
      secrets.add(linkIn(m, RESET_PATH).token);
    }
    await new Promise((res) => setTimeout(res, 5000));
    const counts = emails.map((e) => s.all(e).filter(isResetMail).length);
    expect(counts, 'one mail per address, across both instances').toEqual(emails.map(() => 1));
    const logs = servers.map((x) => x.output()).join('\n');
    for (const t of secrets) expect(logs.includes(t), 'a token in the logs').toBe(false);
  });
});

describe.each(DIALECTS)('issue 13, without SMTP_URL: the outbox and the mail commands (%s)', (dialect) => {
  const ctx: MailContext = useMailServer(dialect, { smtp: false });

  it('the start-up log says once that mails stay in the outbox', async () => {
    const a = await newAccount(ctx);
    for (let i = 0; i < 3; i += 1) expect202Empty(await forgot(ctx, freshEmail('x')), 'forgot, unknown');
    expect202Empty(await forgot(ctx, a.u.email), 'forgot, known');
    await new Promise((res) => setTimeout(res, 1500));
    const lines = logLines(ctx.server.output());
    const about = lines.filter((l) => /outbox/i.test(String(l.msg ?? '')));
    expect(
      about.length,
      `a start-up line about the outbox:\n${ctx.server.output().slice(0, 3000)}`,
    ).toBeGreaterThan(0);
    const first = String(about[0]?.msg);
    expect(first, 'it names SMTP_URL or SMTP').toMatch(/SMTP/i);
    expect(lines.filter((l) => String(l.msg) === first).length, `said once, not per mail: "${first}"`).toBe(
      1,
    );
  });

  it('forgot → 202; `gatehouse mail list` shows the queued mail, `mail show ID` prints its link; the link resets; an unknown address queued nothing', async () => {
    const a = await newAccount(ctx);
    const unknown = freshEmail('nobody');
    expect202Empty(await forgot(ctx, a.u.email), 'forgot, known');
    expect202Empty(await forgot(ctx, unknown), 'forgot, unknown');
    await new Promise((res) => setTimeout(res, 500));
    const cliEnv = { PUBLIC_URL };
    const list = await runGatehouse(ctx.db.url, ['mail', 'list'], cliEnv);
    expect(list.code, cliSeen(list)).toBe(0);
    expect(list.stdout, `the list names the recipient: ${cliSeen(list)}`).toContain(a.u.email);
    expect(list.stdout, `nothing queued for an unknown address: ${cliSeen(list)}`).not.toContain(unknown);
    const line = list.stdout.split('\n').find((l) => l.includes(a.u.email)) ?? '';
    const id = line.trim().split(/\s+/)[0] ?? '';
    expect(id, `an ID leads the line: "${line}"`).toMatch(/^[A-Za-z0-9_-]+$/);

    const show = await runGatehouse(ctx.db.url, ['mail', 'show', id], cliEnv);
    expect(show.code, cliSeen(show)).toBe(0);
    const links = linksIn(show.stdout).filter((l) => new URL(l).pathname === RESET_PATH);
    expect(links.length, `mail show prints the reset link: ${cliSeen(show)}`).toBeGreaterThan(0);
    const url = new URL(links[0] ?? '');
    expect(url.origin).toBe('http://gatehouse.test');
    expect(url.search).toBe('');
    const token = new URLSearchParams(url.hash.slice(1)).get('token') ?? '';
    expect(token.length, `a token in the fragment: ${links[0]}`).toBeGreaterThanOrEqual(43);
    ctx.track(token);
    const np = ctx.track(strongPassword());
    const r = await resetPassword(ctx, token, np);
    expect(r.status, `the link from the outbox resets: ${seen(r)}`).toBe(204);

    const missing = await runGatehouse(ctx.db.url, ['mail', 'show', '999999999'], cliEnv);
    expect(missing.code, `an unknown ID is an error: ${cliSeen(missing)}`).not.toBe(0);
  });

  it('the server never prints a queued mail: no token, password or JWT in its log', () => {
    expectLogsFreeOf(ctx);
  });
});

describe('issue 13, start-up configuration', () => {
  it('SMTP_URL without PUBLIC_URL: the server refuses to start, non-zero, naming PUBLIC_URL', async () => {
    const db = await createDatabase('sqlite');
    try {
      const r = await runUntilExit({
        DATABASE_URL: db.url,
        SMTP_URL: 'smtp://127.0.0.1:1',
        PUBLIC_URL: undefined,
      });
      expect(r.timedOut, `it started and kept running:\n${r.output.slice(-2000)}`).toBe(false);
      expect(r.code, r.output.slice(-2000)).not.toBe(0);
      expect(r.code, r.output.slice(-2000)).not.toBeNull();
      expect(r.output, 'the message names PUBLIC_URL').toContain('PUBLIC_URL');
    } finally {
      await db.drop();
    }
  });

  it.each([
    ['no scheme', 'gatehouse.test'],
    ['a javascript: URL', 'javascript:alert(1)'],
    ['not a URL', 'not a url'],
  ])('a PUBLIC_URL that is %s is refused at start when SMTP_URL is set', async (_what, value) => {
    const db = await createDatabase('sqlite');
    try {
      const r = await runUntilExit({
        DATABASE_URL: db.url,
        SMTP_URL: 'smtp://127.0.0.1:1',
        PUBLIC_URL: value,
      });
      expect(r.timedOut, `it started with PUBLIC_URL=${value}:\n${r.output.slice(-2000)}`).toBe(false);
      expect(r.code, r.output.slice(-2000)).not.toBe(0);
      expect(r.output, 'the message names PUBLIC_URL').toContain('PUBLIC_URL');
    } finally {
      await db.drop();
    }
  });

  it('neither SMTP_URL nor PUBLIC_URL (the embedded default): it starts, and the seed flow and forgot work', async () => {
    const db = await createDatabase('sqlite');
    let server: RunningServer | undefined;
    try {
      server = await startServer({
        databaseUrl: db.url,
        env: { SMTP_URL: undefined, PUBLIC_URL: undefined },
      });
      const s = server;
      const u = await registerUser({ url: (p) => s.url(p), track: (x) => x });
      const t = await postForm(s.url('/token'), {
        grant_type: 'password',
        username: u.username,
        password: u.password,
      });
      expect(t.status, t.text).toBe(200);
      const f = await fetch(s.url('/password/forgot'), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ email: u.email }),
      });
      expect(f.status, await f.text()).toBe(202);
    } finally {
      await server?.stop();
      await db.drop();
    }
  });
});
