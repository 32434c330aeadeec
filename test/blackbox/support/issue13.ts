/**
 * Helpers for the adversarial issue 13 suites (email verification, password reset, email change, the outbox), written
 * from the issue text and AUTH-FLOWS.md §0–§2, §6, §7.1, §7.2 alone: nothing from src/ is read or imported.
 *
 * Servers get `SMTP_URL` (a SmtpSink in this process), `PUBLIC_URL=http://gatehouse.test` and otherwise the defaults,
 * throttling on. One exception: `TRUST_PROXY=loopback`, so that each test speaks from an `X-Forwarded-For` address
 * of its own. The per-IP caps on forgot/resend/verify (AUTH-FLOWS.md: 30 mails an hour, 10 verify tries in
 * 5 minutes) would otherwise let one test's requests refuse the next test's, since every client here is 127.0.0.1.
 * It also makes the Host-header test stronger: `X-Forwarded-Host` then comes from a trusted peer, and still must not
 * make the link.
 */
import { randomBytes } from 'node:crypto';
import { DatabaseSync } from 'node:sqlite';
import pg from 'pg';
import { afterAll, beforeAll, expect } from 'vitest';
import {
  type Json,
  postJson,
  type RegisteredUser,
  type Reply,
  registerUser,
  request,
  splitToken,
  uniqueName,
} from './client.ts';
import { type Grant, loginGrant } from './grants.ts';
import { type CliResult, cliSeen, runCli } from './issue12.ts';
import {
  createDatabase,
  type Dialect,
  getFreePort,
  type RunningServer,
  randomId,
  type ServerContext,
  startServer,
  type TestDatabase,
} from './server.ts';
import { type ReceivedMail, SmtpSink } from './smtp-sink.ts';

export { cliSeen };

export const PUBLIC_URL = 'http://gatehouse.test';
export const PUBLIC_ORIGIN = 'http://gatehouse.test';
export const VERIFY_PATH = '/account/verify-email';
export const RESET_PATH = '/account/reset-password';

export interface MailContext extends ServerContext {
  /** The SMTP server the app sends to; throws when the context was started without one. */
  readonly sink: SmtpSink;
  /** A fresh client address, sent as X-Forwarded-For (the server trusts loopback as its proxy). */
  ip(): string;
}

export interface MailServerOptions {
  /** Start an SMTP sink and point SMTP_URL at it (default true). */
  smtp?: boolean;
  /** Extra environment; a function gets the port the server will listen on (for settings that name it: origins). */
  env?: Record<string, string | undefined> | ((port: number) => Record<string, string | undefined>);
}

/** Like useServer, with a SmtpSink started first (its port goes into SMTP_URL). */
export function useMailServer(dialect: Dialect, opts: MailServerOptions = {}): MailContext {
  let server: RunningServer | undefined;
  let db: TestDatabase | undefined;
  let sink: SmtpSink | undefined;
  const ctx: MailContext = {
    get server() {
      if (!server) throw new Error('server not started');
      return server;
    },
    get db() {
      if (!db) throw new Error('database not created');
      return db;
    },
    get sink() {
      if (!sink) throw new Error('this server has no SMTP sink');
      return sink;
    },
    secrets: new Set<string>(),
    track(s: string) {
      ctx.secrets.add(s);
      return s;
    },
    url(p: string) {
      return ctx.server.url(p);
    },
    ip: freshIp,
  };
  beforeAll(async () => {
    if (opts.smtp !== false) sink = await SmtpSink.start();
    db = await createDatabase(dialect);
    const port = await getFreePort();
    server = await startServer({
      databaseUrl: db.url,
      port,
      env: {
        PUBLIC_URL,
        TRUST_PROXY: 'loopback',
        ...(sink ? { SMTP_URL: sink.url } : {}),
        ...(typeof opts.env === 'function' ? opts.env(port) : opts.env),
      },
    });
  }, 60_000);
  afterAll(async () => {
    try {
      if (server) await server.stop();
    } finally {
      try {
        if (sink) await sink.stop();
      } finally {
        if (db) await db.drop();
      }
    }
  }, 40_000);
  return ctx;
}

// A random start and a counter: unique for 131,072 calls in one process (a random pick among few
// addresses let a test that spent one address's budget share it with a later, unrelated call).
let ipCounter = randomBytes(2).readUInt16BE(0);
/** An address in 198.18.0.0/15 (benchmarking), a different one each call. */
export function freshIp(): string {
  ipCounter = (ipCounter + 1) & 0x1ffff;
  return `198.${18 + (ipCounter >> 16)}.${(ipCounter >> 8) & 255}.${ipCounter & 255}`;
}

export function fromIp(ip: string, extra: Record<string, string> = {}): Record<string, string> {
  return { 'x-forwarded-for': ip, ...extra };
}

/** Status, content type, Retry-After and the start of the body, for failure messages. */
export function seen(r: Reply): string {
  const h: string[] = [];
  for (const name of ['content-type', 'retry-after', 'www-authenticate', 'cache-control']) {
    const v = r.headers.get(name);
    if (v !== null) h.push(`${name}: ${v}`);
  }
  const cookies = r.headers.getSetCookie();
  if (cookies.length > 0) h.push(`set-cookie: ${cookies.length}`);
  return `${r.status} [${h.join('; ')}] ${r.text.slice(0, 400)}`;
}

export function expectNot5xx(r: Reply, what: string): void {
  expect(r.status < 500, `${what}: a 5xx: ${seen(r)}`).toBe(true);
}

// ---------- the routes ----------

export async function post(
  ctx: { url(p: string): string },
  p: string,
  body: unknown,
  opts: { ip?: string; access?: string; headers?: Record<string, string> } = {},
): Promise<Reply> {
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  if (opts.ip !== undefined) headers['x-forwarded-for'] = opts.ip;
  if (opts.access !== undefined) headers.authorization = `Bearer ${opts.access}`;
  return await postJson(ctx.url(p), body, headers);
}

export async function patchMe(ctx: MailContext, access: string, body: unknown, ip?: string): Promise<Reply> {
  const headers: Record<string, string> = {
    authorization: `Bearer ${access}`,
    'content-type': 'application/json',
  };
  if (ip !== undefined) headers['x-forwarded-for'] = ip;
  return await request(ctx.url('/users/me'), { method: 'PATCH', headers, body: JSON.stringify(body) });
}

export async function getMe(ctx: MailContext, access: string): Promise<Reply> {
  return await request(ctx.url('/users/me'), { headers: { authorization: `Bearer ${access}` } });
}

export const askVerification = (ctx: MailContext, access: string, ip = ctx.ip()) =>
  post(ctx, '/users/me/email/verification', {}, { access, ip });
export const verifyEmail = (ctx: MailContext, token: unknown, ip = ctx.ip()) =>
  post(ctx, '/email/verify', { token }, { ip });
export const resendVerification = (ctx: MailContext, email: unknown, ip = ctx.ip()) =>
  post(ctx, '/email/verification/resend', { email }, { ip });
export const forgot = (
  ctx: MailContext,
  email: unknown,
  ip = ctx.ip(),
  headers: Record<string, string> = {},
) => post(ctx, '/password/forgot', { email }, { ip, headers });
export const resetPassword = (ctx: MailContext, token: unknown, newPassword: unknown, ip = ctx.ip()) =>
  post(ctx, '/password/reset', { token, new_password: newPassword }, { ip });

export function expect202(r: Reply, what: string): void {
  expect(r.status, `${what}: expected 202, saw ${seen(r)}`).toBe(202);
}

/** The answer to forgot: 202 `{}`. */
export function expect202Empty(r: Reply, what: string): void {
  expect202(r, what);
  expect(r.json, `${what}: body must be {}: ${seen(r)}`).toEqual({});
}

/** 400 `{"error":"invalid_token","detail":"..."}` (the brief's decision for bad, used or expired tokens). */
export function expectInvalidTokenBody(r: Reply, what: string): void {
  expect(r.status, `${what}: expected 400 invalid_token, saw ${seen(r)}`).toBe(400);
  expect(r.json?.error, `${what}: error code: ${seen(r)}`).toBe('invalid_token');
  expect(typeof r.json?.detail, `${what}: a "detail": ${seen(r)}`).toBe('string');
}

/** Neither an access/refresh token nor a cookie: verifying and resetting sign nobody in. */
export function expectNoSignIn(r: Reply, what: string): void {
  expect(r.headers.getSetCookie(), `${what}: must set no cookie: ${seen(r)}`).toEqual([]);
  expect(r.text, `${what}: must carry no token: ${seen(r)}`).not.toMatch(
    /access_token|refresh_token|id_token|eyJ[A-Za-z0-9_-]{10,}\./,
  );
}

/** A FastAPI-shaped 429 answered like every other one: Retry-After in whole seconds, `{"detail": "..."}`. */
export function expect429(r: Reply, what: string): void {
  expect(r.status, `${what}: expected 429, saw ${seen(r)}`).toBe(429);
  const retry = Number(r.headers.get('retry-after'));
  expect(Number.isInteger(retry) && retry >= 1, `${what}: Retry-After: ${seen(r)}`).toBe(true);
  expect(typeof r.json?.detail, `${what}: FastAPI-shaped body: ${seen(r)}`).toBe('string');
  expect(r.headers.get('cache-control') ?? '', `${what}: ${seen(r)}`).toMatch(/no-store/i);
}

// ---------- users and tokens ----------

export interface Account {
  u: RegisteredUser;
  grant: Grant;
}

/** A unique address on a domain of its own (so that one test's per-address counts never touch another's). */
export function freshEmail(prefix = 'm'): string {
  return `${prefix}-${randomId(5)}@${randomId(3)}.example.com`;
}

export async function newAccount(ctx: MailContext, email = freshEmail()): Promise<Account> {
  const u = await registerUser(ctx, { username: uniqueName('e'), email });
  const grant = await loginGrant(ctx, u);
  return { u, grant };
}

export function claims(access: string): Json {
  return splitToken(access).payload;
}

// ---------- mails and links ----------

export interface MailLink {
  url: URL;
  href: string;
  token: string;
  mail: ReceivedMail;
}

export function linksIn(s: string): string[] {
  return [...s.matchAll(/https?:\/\/[^\s<>"'()[\]]+/g)].map((m) => m[0].replace(/[.,;]+$/, ''));
}

function hrefsIn(html: string): string[] {
  return [...html.matchAll(/\b(?:href|src|action)\s*=\s*["']([^"']+)["']/gi)].map((m) =>
    (m[1] ?? '').replaceAll('&amp;', '&'),
  );
}

/**
 * The one link to `pathname` in a mail, checked the way the issue asks: built from PUBLIC_URL (every link and every
 * href in both bodies on http://gatehouse.test), the token in the fragment `#token=...`, not in the query, the
 * subject or any header; 256 bits of it.
 */
export function linkIn(mail: ReceivedMail, pathname: string, ctx?: { track(s: string): string }): MailLink {
  const what = `mail "${mail.subject}" to ${mail.to.join(',')}`;
  expect(mail.text.length, `${what}: no plain-text body`).toBeGreaterThan(0);
  const all = [...linksIn(mail.text), ...linksIn(mail.html), ...hrefsIn(mail.html)].filter((l) =>
    /^https?:/i.test(l),
  );
  for (const l of all) {
    expect(new URL(l).origin, `${what}: every link must be built from PUBLIC_URL, saw ${l}`).toBe(
      PUBLIC_ORIGIN,
    );
  }
  const matching = linksIn(mail.text).filter((l) => new URL(l).pathname === pathname);
  expect(matching.length, `${what}: a link to ${pathname} in the text body:\n${mail.text}`).toBeGreaterThan(
    0,
  );
  const hrefs = new Set(matching);
  expect(hrefs.size, `${what}: one link, not several: ${[...hrefs].join(' ')}`).toBe(1);
  const href = matching[0] ?? '';
  const url = new URL(href);
  expect(url.search, `${what}: the token must not be in the query: ${href}`).toBe('');
  const token = new URLSearchParams(url.hash.slice(1)).get('token') ?? '';
  expect(url.hash.startsWith('#token='), `${what}: the token goes in the fragment: ${href}`).toBe(true);
  ctx?.track(token);
  expect(token.length, `${what}: empty token in ${href}`).toBeGreaterThan(0);
  const bits = /^[0-9a-f]+$/.test(token)
    ? token.length * 4
    : /^[A-Za-z0-9_-]+$/.test(token)
      ? token.length * 6
      : 0;
  expect(
    bits,
    `${what}: the token must be hex or base64url of 256 random bits: ${token}`,
  ).toBeGreaterThanOrEqual(255);
  expect(mail.subject, `${what}: the token is in the subject`).not.toContain(token);
  expect(mail.headerText, `${what}: the token is in a header`).not.toContain(token);
  if (mail.html.length > 0) {
    expect(mail.html, `${what}: the HTML body must carry the same link`).toContain(token);
  }
  return { url, href, token, mail };
}

export const isVerifyMail = (m: ReceivedMail) => linksIn(m.text).some((l) => l.includes(VERIFY_PATH));
export const isResetMail = (m: ReceivedMail) => linksIn(m.text).some((l) => l.includes(RESET_PATH));
export const hasNoLink = (m: ReceivedMail) => !isVerifyMail(m) && !isResetMail(m);

export async function verifyLink(ctx: MailContext, to: string, timeoutMs = 30_000): Promise<MailLink> {
  const mail = await ctx.sink.next({ to, match: isVerifyMail, timeoutMs });
  return linkIn(mail, VERIFY_PATH, ctx);
}

export async function resetLink(ctx: MailContext, to: string, timeoutMs = 30_000): Promise<MailLink> {
  const mail = await ctx.sink.next({ to, match: isResetMail, timeoutMs });
  return linkIn(mail, RESET_PATH, ctx);
}

/**
 * Asserts that no mail reaches `to`: a mail to another, fresh account is asked for afterwards and waited for (the
 * outbox has had its chance to send), then a further second passes.
 */
export async function expectNoMailTo(ctx: MailContext, to: string, what: string): Promise<void> {
  const other = freshEmail('barrier');
  await registerUser(ctx, { username: uniqueName('b'), email: other });
  expect202Empty(await forgot(ctx, other), `${what}: the barrier's forgot`);
  await ctx.sink.next({ to: other, match: isResetMail, timeoutMs: 30_000 });
  const stray = await ctx.sink.untakenAfter(to, 1000);
  expect(
    stray.map((m) => `"${m.subject}": ${m.text.slice(0, 200)}`),
    `${what}: no mail may reach ${to}`,
  ).toEqual([]);
}

// ---------- the database, read behind the server's back ----------

/** Every value of every table, as text (blobs as UTF-8 and Latin-1), for asserting a secret is stored nowhere. */
export async function databaseText(db: TestDatabase): Promise<string> {
  const out: string[] = [];
  const blob = (b: Uint8Array) => {
    const buf = Buffer.from(b);
    return `${buf.toString('utf8')}\n${buf.toString('latin1')}`;
  };
  if (db.dialect === 'sqlite') {
    const d = new DatabaseSync(db.sqlitePath ?? '', { readOnly: true });
    try {
      const tables = d.prepare("select name from sqlite_master where type = 'table'").all() as Array<{
        name: string;
      }>;
      for (const { name } of tables) {
        for (const row of d.prepare(`select * from "${name.replaceAll('"', '""')}"`).all()) {
          for (const v of Object.values(row)) {
            out.push(v instanceof Uint8Array ? blob(v) : String(v));
          }
        }
      }
    } finally {
      d.close();
    }
    return out.join('\n');
  }
  const c = new pg.Client(db.url);
  await c.connect();
  try {
    const tables = await c.query<{ s: string; t: string }>(
      "select table_schema as s, table_name as t from information_schema.tables where table_type = 'BASE TABLE' " +
        "and table_schema not in ('pg_catalog', 'information_schema')",
    );
    for (const { s, t } of tables.rows) {
      const rows = await c.query({ text: `select * from "${s}"."${t}"`, rowMode: 'array' });
      for (const row of rows.rows as unknown[][]) {
        for (const v of row)
          out.push(v instanceof Uint8Array ? blob(v) : typeof v === 'object' ? JSON.stringify(v) : String(v));
      }
    }
  } finally {
    await c.end();
  }
  return out.join('\n');
}

// ---------- the CLI ----------

/** `npm run --silent gatehouse -- ARGS` against a database, with the environment the server had. */
export function runGatehouse(
  databaseUrl: string,
  args: string[],
  env: Record<string, string> = {},
  timeoutMs = 60_000,
): Promise<CliResult> {
  return runCli(databaseUrl, args, 'npm', timeoutMs, env);
}
