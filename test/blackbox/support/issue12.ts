/**
 * Helpers for the adversarial issue 12 suite, written from the issue text alone: what the issue leaves open (the
 * shape of a page of messages, the admin routes, how the page asks for the refresh cookie) is discovered over HTTP
 * (the OpenAPI document, the built JavaScript the page serves), never read from src/.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { expect } from 'vitest';
import { type Json, postForm, postJson, type RegisteredUser, type Reply, request } from './client.ts';
import { FAST_ARGON2, GATEHOUSE_SECRET, ROOT, type ServerContext } from './server.ts';

// ---------- generic inspection ----------

/** Status, the headers that matter and the start of the body, for failure messages. */
export function seen(r: Reply): string {
  const h: string[] = [];
  for (const name of ['content-type', 'www-authenticate', 'location', 'allow']) {
    const v = r.headers.get(name);
    if (v !== null) h.push(`${name}: ${v}`);
  }
  const cookies = r.headers.getSetCookie();
  if (cookies.length > 0) h.push(`set-cookie: ${cookies.join(' | ')}`);
  return `${r.status} [${h.join('; ')}] ${r.text.slice(0, 600)}`;
}

/** Any answer but a 5xx (or a dropped connection, which fetch turns into a throw). */
export function expectNot5xx(r: Reply, what: string): void {
  expect(r.status < 500, `${what}: a 5xx: ${seen(r)}`).toBe(true);
}

/** A refusal: 4xx with a FastAPI-shaped JSON `detail` (string or list). */
export function expect4xxDetail(r: Reply, what: string): void {
  expect(r.status >= 400 && r.status < 500, `${what}: expected a 4xx, saw ${seen(r)}`).toBe(true);
  expect(
    r.json !== undefined && 'detail' in r.json,
    `${what}: 4xx without a FastAPI "detail": ${seen(r)}`,
  ).toBe(true);
}

export function isWellFormed(s: string): boolean {
  return s.isWellFormed();
}

/** Every string anywhere in a JSON value. */
export function allStrings(v: unknown, out: string[] = []): string[] {
  if (typeof v === 'string') out.push(v);
  else if (Array.isArray(v)) for (const x of v) allStrings(x, out);
  else if (v !== null && typeof v === 'object') for (const x of Object.values(v)) allStrings(x, out);
  return out;
}

/** Every object anywhere in a JSON value (itself included). */
export function allObjects(v: unknown, out: Json[] = []): Json[] {
  if (Array.isArray(v)) for (const x of v) allObjects(x, out);
  else if (v !== null && typeof v === 'object') {
    out.push(v as Json);
    for (const x of Object.values(v)) allObjects(x, out);
  }
  return out;
}

/** The list in a JSON answer: the body itself, or its first array-valued property (preferring the usual names). */
export function findList(body: unknown, preferred: string[] = []): Json[] | undefined {
  if (Array.isArray(body)) return body as Json[];
  if (body === null || typeof body !== 'object') return undefined;
  const o = body as Json;
  for (const k of [...preferred, 'items', 'data', 'results']) if (Array.isArray(o[k])) return o[k] as Json[];
  for (const v of Object.values(o)) if (Array.isArray(v)) return v as Json[];
  return undefined;
}

export function scopesOf(s: unknown): string[] {
  if (typeof s !== 'string') return [];
  return s.split(' ').filter((x) => x.length > 0);
}

/** The attributes of a `WWW-Authenticate: Bearer ...` challenge (RFC 6750 §3), keys lower-cased. */
export function bearerParams(header: string | null): Record<string, string> | undefined {
  if (header === null) return undefined;
  const m = /^\s*Bearer\b(.*)$/i.exec(header);
  if (!m) return undefined;
  const out: Record<string, string> = {};
  for (const p of (m[1] ?? '').matchAll(/([A-Za-z_]+)\s*=\s*"((?:[^"\\]|\\.)*)"/g)) {
    out[(p[1] ?? '').toLowerCase()] = p[2] ?? '';
  }
  return out;
}

/** RFC 6750 §3.1: 403 insufficient_scope naming (at least) the scope that was missing. */
export function expectInsufficientScope(r: Reply, missing: string, what: string): void {
  expect(r.status, `${what}: expected 403, saw ${seen(r)}`).toBe(403);
  const params = bearerParams(r.headers.get('www-authenticate'));
  expect(params, `${what}: no "WWW-Authenticate: Bearer ..." challenge: ${seen(r)}`).toBeDefined();
  expect(params?.error, `${what}: challenge error: ${seen(r)}`).toBe('insufficient_scope');
  expect(
    scopesOf(params?.scope),
    `${what}: challenge scope="..." must name ${missing}: ${seen(r)}`,
  ).toContain(missing);
  expect(typeof r.json?.detail, `${what}: FastAPI-shaped body: ${seen(r)}`).toBe('string');
}

/** RFC 6749 §5.2: 400 {"error":"invalid_scope"}. */
export function expectInvalidScope(r: Reply, what: string): void {
  expect(r.status, `${what}: expected 400 invalid_scope, saw ${seen(r)}`).toBe(400);
  expect(r.json?.error, `${what}: error code: ${seen(r)}`).toBe('invalid_scope');
  expect(r.headers.get('cache-control') ?? '', `${what}: RFC 6749 §5.2 Cache-Control: ${seen(r)}`).toMatch(
    /no-store/i,
  );
}

// ---------- tokens ----------

export async function tokenRaw(
  on: { url(p: string): string },
  fields: Record<string, string>,
  mode: 'form' | 'json' = 'form',
  headers: Record<string, string> = {},
): Promise<Reply> {
  return mode === 'form'
    ? await postForm(on.url('/token'), fields, headers)
    : await postJson(on.url('/token'), fields, headers);
}

export async function passwordToken(
  ctx: ServerContext,
  u: Pick<RegisteredUser, 'username' | 'password'>,
  extra: Record<string, string> = {},
  mode: 'form' | 'json' = 'form',
): Promise<Reply> {
  return await tokenRaw(
    ctx,
    { grant_type: 'password', username: u.username, password: u.password, ...extra },
    mode,
  );
}

export async function call(
  ctx: { url(p: string): string },
  method: string,
  p: string,
  access?: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<Reply> {
  const h: Record<string, string> = { ...headers };
  if (access !== undefined) h.authorization = `Bearer ${access}`;
  let payload: string | Buffer | undefined;
  if (body !== undefined) {
    if (Buffer.isBuffer(body)) payload = body;
    else payload = typeof body === 'string' ? body : JSON.stringify(body);
    h['content-type'] ??= 'application/json';
  }
  return await request(ctx.url(p), {
    method,
    headers: h,
    ...(payload === undefined ? {} : { body: payload }),
  });
}

// ---------- messages ----------

export interface Page {
  items: Json[];
  /** The cursor of the next page: a string, null on the last page, undefined when the answer has no cursor field. */
  next: string | null | undefined;
  nextKey: string | undefined;
}

const CURSOR_KEYS = ['next', 'next_cursor', 'nextCursor', 'cursor', 'next_before', 'before'];

export function pageOf(r: Reply, what: string): Page {
  expect(r.status, `${what}: expected 200, saw ${seen(r)}`).toBe(200);
  const items = findList(r.json, ['messages']);
  expect(items, `${what}: no list of messages in the answer: ${seen(r)}`).toBeDefined();
  let next: string | null | undefined;
  let nextKey: string | undefined;
  if (r.json !== null && typeof r.json === 'object' && !Array.isArray(r.json)) {
    for (const k of CURSOR_KEYS) {
      if (k in r.json) {
        const v = r.json[k];
        if (typeof v === 'string' || v === null) {
          next = v === '' ? null : v;
          nextKey = k;
          break;
        }
      }
    }
  }
  return { items: items ?? [], next, nextKey };
}

export function textOf(item: Json, what: string): string {
  for (const k of ['text', 'body', 'content', 'message']) if (typeof item[k] === 'string') return item[k];
  throw new Error(`${what}: a message without a text field: ${JSON.stringify(item).slice(0, 300)}`);
}

/** The id of a message if the API shows one (for walking routes with another user's ids). */
export function idOf(item: Json): string | undefined {
  for (const k of ['id', 'message_id', 'messageId']) {
    const v = item[k];
    if (typeof v === 'string' || typeof v === 'number') return String(v);
  }
  return undefined;
}

/** Variants of a cursor an attacker would try: altered bytes, and, for a readable cursor, altered fields. */
export function tamperedCursors(cursor: string): string[] {
  const out = new Set<string>();
  const flip = (i: number) => {
    const c = cursor[i] ?? 'A';
    const r = c === 'A' ? 'B' : 'A';
    return cursor.slice(0, i) + r + cursor.slice(i + 1);
  };
  out.add(flip(0));
  out.add(flip(Math.floor(cursor.length / 2)));
  out.add(flip(cursor.length - 1));
  out.add(cursor.slice(0, -2));
  out.add(`${cursor}AA`);
  if (/^\d+$/.test(cursor)) {
    for (const n of [0, 1, Number(cursor) + 1000, 2 ** 31, -1]) out.add(String(n));
  }
  for (const enc of ['base64url', 'base64'] as const) {
    let decoded: string;
    try {
      decoded = Buffer.from(cursor, enc).toString('utf8');
    } catch {
      continue;
    }
    if (!/^[\x20-\x7e]+$/.test(decoded)) continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(decoded);
    } catch {
      parsed = undefined;
    }
    const variants: string[] = [];
    if (parsed !== null && typeof parsed === 'object') {
      for (const [k, v] of Object.entries(parsed as Json)) {
        for (const nv of typeof v === 'number' ? [0, 1, v + 1000, 2 ** 31, -1] : ['1', "' OR 1=1 --", '']) {
          variants.push(JSON.stringify({ ...(parsed as Json), [k]: nv }));
        }
      }
    } else {
      // A readable non-JSON cursor ("123:456", "2025-...|17"): alter each number in it.
      for (const m of decoded.matchAll(/\d+/g)) {
        const at = m.index ?? 0;
        for (const nv of ['0', '1', '999999999']) {
          variants.push(decoded.slice(0, at) + nv + decoded.slice(at + m[0].length));
        }
      }
    }
    for (const v of variants) out.add(Buffer.from(v, 'utf8').toString(enc));
  }
  out.delete(cursor);
  return [...out].slice(0, 40);
}

// ---------- OpenAPI ----------

export interface Route {
  path: string;
  method: string;
  params: string[];
  op: Json;
}

export async function openapiRoutes(ctx: { url(p: string): string }): Promise<Route[]> {
  const r = await request(ctx.url('/openapi.json'));
  expect(r.status, `GET /openapi.json: ${seen(r)}`).toBe(200);
  const paths = (r.json?.paths ?? {}) as Record<string, Json>;
  const out: Route[] = [];
  for (const [p, item] of Object.entries(paths)) {
    for (const [method, op] of Object.entries(item)) {
      if (!['get', 'post', 'put', 'patch', 'delete'].includes(method)) continue;
      out.push({
        path: p,
        method: method.toUpperCase(),
        params: [...p.matchAll(/\{([^}]+)\}/g)].map((m) => m[1] ?? ''),
        op: op as Json,
      });
    }
  }
  return out;
}

export function fillPath(template: string, values: Record<string, string>): string {
  return template.replace(/\{([^}]+)\}/g, (_, name: string) => encodeURIComponent(values[name] ?? ''));
}

// ---------- the CLI ----------

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
  command: string;
}

/**
 * Runs the operator CLI the way the issue documents it (`npm run gatehouse -- ...` or `npx gatehouse ...`) in the
 * project directory with the environment the test servers get, stdin not a terminal. npm is kept offline, so that a
 * missing bin fails here instead of fetching some other package named gatehouse from the registry.
 */
export async function runCli(
  databaseUrl: string,
  args: string[],
  via: 'npm' | 'npx' = 'npm',
  timeoutMs = 60_000,
  extraEnv: Record<string, string> = {},
): Promise<CliResult> {
  const env: Record<string, string> = {
    PATH: `${path.join(ROOT, 'node_modules', '.bin')}:${process.env.PATH ?? ''}`,
    GATEHOUSE_SECRET,
    DATABASE_URL: databaseUrl,
    LOG_LEVEL: 'warn',
    NO_COLOR: '1',
    npm_config_offline: 'true',
    npm_config_update_notifier: 'false',
    npm_config_fund: 'false',
    npm_config_audit: 'false',
    ...FAST_ARGON2,
    ...extraEnv,
  };
  for (const k of ['HOME', 'TMPDIR', 'LANG', 'TZ']) {
    const v = process.env[k];
    if (v !== undefined) env[k] = v;
  }
  const argv =
    via === 'npm' ? ['run', '--silent', 'gatehouse', '--', ...args] : ['--no', '--', 'gatehouse', ...args];
  const command = `${via} ${argv.join(' ')}`;
  const proc = spawn(via, argv, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (d: Buffer) => {
    stdout += d.toString('utf8');
  });
  proc.stderr.on('data', (d: Buffer) => {
    stderr += d.toString('utf8');
  });
  const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
  const code = await new Promise<number | null>((resolve) => {
    proc.on('close', (c) => resolve(c));
    proc.on('error', () => resolve(null));
  });
  clearTimeout(timer);
  return { code, stdout, stderr, command };
}

export function cliSeen(r: CliResult): string {
  return `\`${r.command}\` exited ${r.code}\n--- stdout ---\n${r.stdout.slice(0, 1500)}\n--- stderr ---\n${r.stderr.slice(0, 1500)}`;
}

// ---------- cookies ----------

export interface SetCookie {
  raw: string;
  name: string;
  value: string;
  attrs: Map<string, string>;
}

export function parseSetCookie(raw: string): SetCookie {
  const [pair = '', ...rest] = raw.split(';');
  const eq = pair.indexOf('=');
  const attrs = new Map<string, string>();
  for (const a of rest) {
    const i = a.indexOf('=');
    const k = (i < 0 ? a : a.slice(0, i)).trim().toLowerCase();
    const v = i < 0 ? '' : a.slice(i + 1).trim();
    if (k) attrs.set(k, v);
  }
  return { raw, name: pair.slice(0, eq).trim(), value: pair.slice(eq + 1).trim(), attrs };
}

/** A cookie being deleted (empty value or an expiry in the past) rather than set. */
export function isDeletion(c: SetCookie): boolean {
  if (c.value === '' || c.value === '""') return true;
  const maxAge = c.attrs.get('max-age');
  if (maxAge !== undefined && Number(maxAge) <= 0) return true;
  const expires = c.attrs.get('expires');
  return expires !== undefined && Date.parse(expires) < Date.now();
}

/**
 * The issue: HttpOnly, SameSite=Strict, `__Host-` prefixed, Secure except on localhost. RFC 6265bis §4.1.3.2: a
 * `__Host-` cookie is Secure, has Path=/ and no Domain (else browsers drop it).
 */
export function expectCookieRules(c: SetCookie, what: string): void {
  const w = `${what}: Set-Cookie ${c.raw}`;
  expect(c.attrs.has('httponly'), `${w}: no HttpOnly`).toBe(true);
  expect((c.attrs.get('samesite') ?? '').toLowerCase(), `${w}: SameSite must be Strict`).toBe('strict');
  expect(c.attrs.has('path'), `${w}: no Path`).toBe(true);
  expect((c.attrs.get('path') ?? '').startsWith('/'), `${w}: Path must be absolute`).toBe(true);
  if (c.attrs.has('secure')) {
    expect(c.name.startsWith('__Host-'), `${w}: a Secure refresh cookie must carry the __Host- prefix`).toBe(
      true,
    );
  }
  expectCookiePrefixRules(c, what);
}

/** RFC 6265bis §4.1.3: the rules a prefixed cookie must follow, else browsers drop it. */
export function expectCookiePrefixRules(c: SetCookie, what: string): void {
  const w = `${what}: Set-Cookie ${c.raw}`;
  if (c.name.startsWith('__Secure-'))
    expect(c.attrs.has('secure'), `${w}: __Secure- without Secure`).toBe(true);
  if (c.name.startsWith('__Host-')) {
    expect(c.attrs.has('secure'), `${w}: __Host- without Secure is dropped by browsers`).toBe(true);
    expect(c.attrs.get('path'), `${w}: __Host- requires Path=/`).toBe('/');
    expect(c.attrs.has('domain'), `${w}: __Host- forbids Domain`).toBe(false);
  }
}

// ---------- the account page ----------

export interface PageAssets {
  page: Reply;
  js: string;
  files: string[];
  headerPairs: Array<[string, string]>;
  pathCandidates: string[];
  passwordExtras: Record<string, string>;
  refreshExtras: Record<string, string>;
}

/** The page at `/` and the JavaScript it loads (same origin), with what that JavaScript reveals about its calls. */
export async function loadPage(ctx: ServerContext): Promise<PageAssets> {
  const page = await request(ctx.url('/'), { headers: { accept: 'text/html' } });
  const base = ctx.url('/');
  const queue: string[] = [];
  for (const m of page.text.matchAll(/<script\b[^>]*\bsrc\s*=\s*["']?([^"'\s>]+)/gi)) queue.push(m[1] ?? '');
  for (const m of page.text.matchAll(/<link\b[^>]*\bhref\s*=\s*["']?([^"'\s>]+\.m?js)\b/gi))
    queue.push(m[1] ?? '');
  const seenUrls = new Set<string>();
  const files: string[] = [];
  let js = '';
  let from = base;
  const pending = queue.map((q) => ({ ref: q, from }));
  while (pending.length > 0 && files.length < 30) {
    const next = pending.shift();
    if (!next) break;
    let u: URL;
    try {
      u = new URL(next.ref, next.from);
    } catch {
      continue;
    }
    if (u.origin !== new URL(base).origin || seenUrls.has(u.href)) continue;
    seenUrls.add(u.href);
    const r = await request(u.href);
    if (r.status !== 200) continue;
    files.push(u.pathname);
    js += `\n${r.text}`;
    from = u.href;
    for (const m of r.text.matchAll(/(?:from|import\(?)\s*["'`]([^"'`]+\.m?js)["'`]/g)) {
      pending.push({ ref: m[1] ?? '', from: u.href });
    }
  }

  const headerPairs = new Map<string, string>();
  for (const m of js.matchAll(/["'`](x-[a-z0-9-]+)["'`]\s*[:,]\s*["'`]([^"'`\\]{0,200})["'`]/gi)) {
    headerPairs.set((m[1] ?? '').toLowerCase(), m[2] ?? '');
  }
  for (const m of js.matchAll(/["'`](x-[a-z0-9-]+)["'`]/gi)) {
    const name = (m[1] ?? '').toLowerCase();
    if (!headerPairs.has(name) && name !== 'x-request-id') headerPairs.set(name, '1');
  }

  const paths: string[] = [];
  const addPath = (p: string) => {
    if (p.length > 1 && p.length < 80 && !paths.includes(p)) paths.push(p);
  };
  for (const m of js.matchAll(/["'`](\/[A-Za-z0-9_\-/.?=&]*)["'`]/g)) {
    const p = m[1] ?? '';
    if (/token|session|login|sign|refresh|auth|cookie/i.test(p)) addPath(p);
  }
  for (const m of js.matchAll(
    /\/(?:[A-Za-z0-9_-]+\/)*(?:token|sessions?|login|signin|sign-in|refresh|auth|cookie)(?:[A-Za-z0-9_\-/]*)(?:\?[A-Za-z0-9_=&-]*)?/g,
  )) {
    addPath(m[0]);
  }

  return {
    page,
    js,
    files,
    headerPairs: [...headerPairs.entries()],
    pathCandidates: paths.filter((p) => !p.startsWith('//')).slice(0, 15),
    passwordExtras: literalFieldsNear(js, 'password'),
    refreshExtras: literalFieldsNear(js, 'refresh_token'),
  };
}

/** Literal fields sent beside `grant_type: "<grant>"` in the page's code (a body flag asking for the cookie, say). */
function literalFieldsNear(js: string, grant: string): Record<string, string> {
  const out: Record<string, string> = {};
  const re = new RegExp(`grant_type["']?\\s*[:,]\\s*["'\`]${grant}["'\`]`, 'g');
  for (const m of js.matchAll(re)) {
    const at = m.index ?? 0;
    const around = js.slice(Math.max(0, at - 300), at + 300);
    for (const f of around.matchAll(
      /(?<=[{,]\s*)["']?([a-z_]{3,30})["']?\s*:\s*(?:["'`]([^"'`]{1,40})["'`]|(!0|true))/gi,
    )) {
      const k = f[1] ?? '';
      const fetchOptions = ['method', 'credentials', 'mode', 'cache', 'redirect', 'headers', 'body'];
      if (['grant_type', 'username', 'password', 'refresh_token', ...fetchOptions].includes(k)) continue;
      out[k] = f[2] ?? 'true';
    }
    for (const f of around.matchAll(
      /\.(?:append|set)\(\s*["']([a-z_]{3,30})["']\s*,\s*["']([^"']{1,40})["']/gi,
    )) {
      const k = f[1] ?? '';
      if (!['grant_type', 'username', 'password', 'refresh_token'].includes(k)) out[k] = f[2] ?? '';
    }
  }
  return out;
}

export function bodyFor(
  mode: 'form' | 'json',
  fields: Record<string, string>,
): { type: string; body: string } {
  return mode === 'form'
    ? { type: 'application/x-www-form-urlencoded', body: new URLSearchParams(fields).toString() }
    : { type: 'application/json', body: JSON.stringify(fields) };
}
