/** HTTP helpers for the black-box suite: fetch wrappers, a raw socket client, token forging. */
import { createHmac, randomBytes } from 'node:crypto';
import net from 'node:net';
import { expect } from 'vitest';
import { randomId, type ServerContext } from './server.ts';

export interface Reply {
  status: number;
  headers: Headers;
  text: string;
  // biome-ignore lint/suspicious/noExplicitAny: JSON bodies are inspected dynamically
  json: any;
}

export async function toReply(r: Response): Promise<Reply> {
  const text = await r.text();
  let json: unknown;
  try {
    json = text.length > 0 ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: r.status, headers: r.headers, text, json };
}

export async function request(url: string, init: RequestInit = {}): Promise<Reply> {
  const r = await fetch(url, {
    redirect: 'manual',
    ...init,
    signal: init.signal ?? AbortSignal.timeout(20_000),
  });
  return await toReply(r);
}

export async function postJson(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<Reply> {
  return await request(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

export async function postForm(
  url: string,
  fields: Record<string, string> | string,
  headers: Record<string, string> = {},
): Promise<Reply> {
  return await request(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: typeof fields === 'string' ? fields : new URLSearchParams(fields).toString(),
  });
}

export async function getWithToken(url: string, token: string, scheme = 'Bearer'): Promise<Reply> {
  return await request(url, { headers: { authorization: `${scheme} ${token}` } });
}

export interface RegisteredUser {
  id: number;
  username: string;
  email: string;
  password: string;
  age: number;
  level: string;
}

let counter = 0;
export function uniqueName(prefix = 'u'): string {
  counter += 1;
  return `${prefix}${counter}_${randomId(4)}`;
}

/** A strong, distinctive password (never common, easy to grep for in logs). */
export function strongPassword(): string {
  return `Pw-${randomBytes(12).toString('base64url')}-z9`;
}

export async function registerUser(
  ctx: Pick<ServerContext, 'url' | 'track'>,
  overrides: Partial<{
    username: string;
    email: string;
    password: string;
    age: number | string;
    level: string;
  }> = {},
): Promise<RegisteredUser> {
  const username = overrides.username ?? uniqueName();
  const body = {
    username,
    email:
      overrides.email ?? `${username.toLowerCase().replace(/[^a-z0-9._-]/g, 'x')}-${randomId(3)}@example.com`,
    password: ctx.track(overrides.password ?? strongPassword()),
    age: overrides.age ?? 30,
    level: overrides.level ?? 'beginner',
  };
  const r = await postJson(ctx.url('/register/'), body);
  expect(r.status, `register ${username}: ${r.text}`).toBe(200);
  return { ...r.json, password: body.password } as RegisteredUser;
}

/** Registers a fresh user on any running server (a second instance, say) and returns their credentials. */
export async function registerFresh(
  on: { url(p: string): string },
  prefix = 'u',
): Promise<{ username: string; password: string }> {
  const user = { username: uniqueName(prefix), password: strongPassword() };
  const r = await postJson(on.url('/register/'), {
    ...user,
    email: `${user.username}@example.com`,
    age: 30,
    level: 'beginner',
  });
  expect(r.status, `register ${user.username}: ${r.text}`).toBe(200);
  return user;
}

export async function login(ctx: ServerContext, username: string, password: string): Promise<string> {
  const r = await postForm(ctx.url('/token'), { grant_type: 'password', username, password });
  expect(r.status, `login ${username}: ${r.text}`).toBe(200);
  const token = r.json.access_token as string;
  ctx.track(token);
  const sig = token.split('.')[2];
  if (sig) ctx.track(sig);
  return token;
}

// ---------- raw HTTP over a socket (duplicate headers, odd bytes, no content-type) ----------

export interface RawReply {
  status: number;
  headers: Record<string, string[]>;
  body: string;
}

export function header(r: RawReply, name: string): string | undefined {
  return r.headers[name.toLowerCase()]?.join(', ');
}

export async function rawHttp(
  port: number,
  head: string,
  body: Buffer | string = '',
  timeoutMs = 15_000,
): Promise<RawReply> {
  return await new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error('raw request timed out'));
    }, timeoutMs);
    sock.on('data', (d: Buffer) => chunks.push(d));
    sock.on('error', (e) => {
      clearTimeout(timer);
      // a response may already have arrived before a reset
      const buf = Buffer.concat(chunks);
      if (buf.length > 0) {
        try {
          resolve(parseRaw(buf));
          return;
        } catch {
          // fall through
        }
      }
      reject(e);
    });
    sock.on('end', () => {
      clearTimeout(timer);
      try {
        resolve(parseRaw(Buffer.concat(chunks)));
      } catch (e) {
        reject(e);
      }
    });
    sock.write(
      Buffer.concat([Buffer.from(head, 'latin1'), typeof body === 'string' ? Buffer.from(body) : body]),
    );
  });
}

function parseRaw(buf: Buffer): RawReply {
  const idx = buf.indexOf('\r\n\r\n');
  if (idx < 0) throw new Error(`incomplete HTTP response: ${buf.toString('latin1').slice(0, 200)}`);
  const headText = buf.subarray(0, idx).toString('latin1');
  let body = buf.subarray(idx + 4);
  const lines = headText.split('\r\n');
  const statusLine = lines.shift() ?? '';
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine);
  if (!m?.[1]) throw new Error(`bad status line: ${statusLine}`);
  const headers: Record<string, string[]> = {};
  for (const line of lines) {
    const c = line.indexOf(':');
    if (c < 0) continue;
    const k = line.slice(0, c).trim().toLowerCase();
    const v = line.slice(c + 1).trim();
    headers[k] ??= [];
    headers[k].push(v);
  }
  if ((headers['transfer-encoding'] ?? []).join(',').toLowerCase().includes('chunked')) {
    const parts: Buffer[] = [];
    let rest = body;
    for (;;) {
      const nl = rest.indexOf('\r\n');
      if (nl < 0) break;
      const size = Number.parseInt(rest.subarray(0, nl).toString('latin1'), 16);
      if (!Number.isFinite(size) || size === 0) break;
      parts.push(rest.subarray(nl + 2, nl + 2 + size));
      rest = rest.subarray(nl + 2 + size + 2);
    }
    body = Buffer.concat(parts);
  }
  return { status: Number(m[1]), headers, body: body.toString('utf8') };
}

/** Builds a request head with Connection: close and the given header lines (duplicates allowed). */
export function rawHead(method: string, path: string, headerLines: string[], bodyLength?: number): string {
  const lines = [`${method} ${path} HTTP/1.1`, 'Host: 127.0.0.1', 'Connection: close', ...headerLines];
  if (bodyLength !== undefined) lines.push(`Content-Length: ${bodyLength}`);
  return `${lines.join('\r\n')}\r\n\r\n`;
}

// ---------- JWT pieces ----------

export function b64url(data: Buffer | string): string {
  return (typeof data === 'string' ? Buffer.from(data, 'utf8') : data).toString('base64url');
}

// biome-ignore lint/suspicious/noExplicitAny: decoded JOSE objects are free-form
export type Json = Record<string, any>;

export function decodePart(part: string | undefined): Json {
  return JSON.parse(Buffer.from(part ?? '', 'base64url').toString('utf8')) as Json;
}

export function splitToken(token: string): { header: Json; payload: Json; parts: string[] } {
  const parts = token.split('.');
  return { header: decodePart(parts[0]), payload: decodePart(parts[1]), parts };
}

/** HMAC-signs header.payload (either objects or pre-encoded JSON strings) with arbitrary key bytes. */
export function hmacSign(
  header: Json | string,
  payload: Json | string,
  key: Buffer | string,
  alg: 'HS256' | 'HS384' | 'HS512' = 'HS256',
): string {
  const h = b64url(typeof header === 'string' ? header : JSON.stringify(header));
  const p = b64url(typeof payload === 'string' ? payload : JSON.stringify(payload));
  const hash = alg === 'HS256' ? 'sha256' : alg === 'HS384' ? 'sha384' : 'sha512';
  const sig = createHmac(hash, key).update(`${h}.${p}`).digest('base64url');
  return `${h}.${p}.${sig}`;
}

export function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}

/** RFC 6750 §3: no credentials → `Bearer` (optionally with realm), and no error attribute. */
export const BARE_BEARER_CHALLENGE = /^Bearer(\s+realm="[^"]*")?$/;
/** RFC 6750 §3.1: a token was sent but is invalid. */
export const INVALID_TOKEN_CHALLENGE =
  /^Bearer\s+(realm="[^"]*",\s*)?error="invalid_token"(,\s*error_description="[\x20\x21\x23-\x5B\x5D-\x7E]*")?$/;

export function expectInvalidToken(r: Reply, what: string): void {
  expect(r.status, `${what}: ${r.text}`).toBe(401);
  expect(r.headers.get('www-authenticate'), what).toMatch(INVALID_TOKEN_CHALLENGE);
  expect(r.headers.get('content-type') ?? '', what).toMatch(/^application\/json/);
  expect(typeof r.json?.detail, what).toBe('string');
  expect(r.json).not.toHaveProperty('conversation');
}

export function expectJsonContentType(r: Reply | Response): void {
  expect(r.headers.get('content-type') ?? '').toMatch(/^application\/json(;\s*charset=utf-8)?$/i);
}

export function expectNoStore(r: Reply): void {
  expect(r.headers.get('cache-control') ?? '').toMatch(/(^|,)\s*no-store\s*(,|$)/i);
}

/** FastAPI-shaped 422: {"detail":[{"loc":["body",...],"msg":"...","type":"..."}]} */
export function expect422(r: Reply, field?: string): void {
  expect(r.status, r.text).toBe(422);
  expectJsonContentType(r);
  expect(Array.isArray(r.json?.detail), r.text).toBe(true);
  expect(r.json.detail.length).toBeGreaterThan(0);
  for (const d of r.json.detail as Json[]) {
    expect(Array.isArray(d.loc), r.text).toBe(true);
    expect(typeof d.msg, r.text).toBe('string');
    expect(typeof d.type, r.text).toBe('string');
    expect(d.loc[0], r.text).toBe('body');
  }
  if (field !== undefined) {
    const locs = (r.json.detail as Json[]).map((d) => (d.loc as unknown[]).join('.'));
    expect(locs, r.text).toContain(`body.${field}`);
  }
}

export function expectOAuthError(r: Reply, error: string): void {
  expect(r.status, r.text).toBe(400);
  expectJsonContentType(r);
  expectNoStore(r);
  expect(r.json?.error, r.text).toBe(error);
}

export async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] ?? 0) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
}

/** Asserts the captured logs contain none of the tracked secrets. */
export function expectLogsFreeOf(ctx: ServerContext): void {
  const logs = ctx.server.output();
  expect(ctx.secrets.size, 'the suite tracked no secrets: the check would be vacuous').toBeGreaterThan(0);
  expect(logs.length, 'no log output captured').toBeGreaterThan(0);
  const leaked = [...ctx.secrets].filter((s) => s.length >= 12 && logs.includes(s));
  expect(
    leaked.map((s) => `${s.slice(0, 12)}… (${s.length} chars)`),
    'secrets found in server logs',
  ).toEqual([]);
}
