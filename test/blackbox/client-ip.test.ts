/**
 * The client address over real sockets: which peer may say who the client is (TRUST_PROXY, CLIENT_IP_HEADER). The
 * peer is this machine: 127.0.0.1, or 127.0.0.2 (also loopback on Linux) for a second, untrusted peer.
 */
import http from 'node:http';
import { describe, expect, it, vi } from 'vitest';
import { registerUser } from './support/client.ts';
import { createDatabase, runUntilExit, type ServerContext, useServer } from './support/server.ts';

vi.setConfig({ testTimeout: 60_000, hookTimeout: 60_000 });

interface Answer {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: JSON bodies are inspected dynamically
  json: any;
  text: string;
}

async function send(
  url: string,
  options: { method?: string; headers?: Record<string, string>; body?: string; localAddress?: string },
): Promise<Answer> {
  return await new Promise((resolve, reject) => {
    const request = http.request(
      url,
      {
        method: options.method ?? 'GET',
        headers: options.headers ?? {},
        localAddress: options.localAddress ?? '127.0.0.1',
        agent: false,
        timeout: 20_000,
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: response.statusCode ?? 0, json, text });
        });
      },
    );
    request.on('error', reject);
    request.on('timeout', () => request.destroy(new Error('request timed out')));
    request.end(options.body);
  });
}

/** Logs in over its own connection from `localAddress` and answers the address its session recorded. */
async function recordedIp(
  ctx: ServerContext,
  user: { username: string; password: string },
  headers: Record<string, string>,
  localAddress = '127.0.0.1',
): Promise<string> {
  const login = await send(ctx.url('/token'), {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams({ username: user.username, password: user.password }).toString(),
    localAddress,
  });
  expect(login.status, login.text).toBe(200);
  const token = ctx.track(login.json.access_token as string);
  const sessions = await send(ctx.url('/users/me/sessions'), {
    headers: { authorization: `Bearer ${token}` },
  });
  expect(sessions.status, sessions.text).toBe(200);
  const current = (sessions.json.sessions as { current: boolean; ip_address: string }[]).find(
    (s) => s.current,
  );
  return current?.ip_address ?? 'none';
}

/** The `ip` of every `login_succeeded` audit line the server wrote so far. */
function loginAuditIps(ctx: ServerContext): string[] {
  return ctx.server
    .output()
    .split('\n')
    .filter((line) => line.includes('"login_succeeded"'))
    .map((line) => JSON.parse(line).ip as string);
}

describe('with TRUST_PROXY unset', () => {
  const ctx = useServer('sqlite');

  it('records the socket address for every login, whatever a rotating forged X-Forwarded-For says', async () => {
    const user = await registerUser(ctx);
    const recorded: string[] = [];
    for (const forged of ['203.0.113.1', '203.0.113.2', 'spoofed, 203.0.113.3', '10.0.0.1, 198.51.100.4']) {
      recorded.push(await recordedIp(ctx, user, { 'x-forwarded-for': forged, 'x-real-ip': forged }));
    }
    expect(recorded).toEqual(['127.0.0.1', '127.0.0.1', '127.0.0.1', '127.0.0.1']);
    expect(new Set(loginAuditIps(ctx))).toEqual(new Set(['127.0.0.1']));
  });
});

describe('with TRUST_PROXY=loopback', () => {
  const ctx = useServer('sqlite', { TRUST_PROXY: 'loopback' });

  it('records the right-most untrusted address, not the spoofed left-most one', async () => {
    const user = await registerUser(ctx);
    expect(await recordedIp(ctx, user, { 'x-forwarded-for': 'spoofed, 203.0.113.7' })).toBe('203.0.113.7');
    expect(loginAuditIps(ctx)).toContain('203.0.113.7');
    expect(loginAuditIps(ctx).some((ip) => ip.includes('spoofed'))).toBe(false);
  });

  it('records two different addresses for two real clients behind the trusted proxy', async () => {
    const user = await registerUser(ctx);
    const first = await recordedIp(ctx, user, { 'x-forwarded-for': '198.51.100.11' });
    const second = await recordedIp(ctx, user, { 'x-forwarded-for': '198.51.100.12' });
    expect([first, second]).toEqual(['198.51.100.11', '198.51.100.12']);
  });
});

describe('with TRUST_PROXY=127.0.0.1,10.0.0.0/8 and CLIENT_IP_HEADER=X-Real-IP', () => {
  const ctx = useServer('sqlite', { TRUST_PROXY: '127.0.0.1,10.0.0.0/8', CLIENT_IP_HEADER: 'X-Real-IP' });

  it('walks a chain of trusted proxies back to the client', async () => {
    const user = await registerUser(ctx);
    expect(await recordedIp(ctx, user, { 'x-forwarded-for': '198.51.100.9, 10.1.2.3' })).toBe('198.51.100.9');
  });

  it('honours the client IP header from the trusted peer', async () => {
    const user = await registerUser(ctx);
    const headers = { 'x-real-ip': '203.0.113.50', 'x-forwarded-for': '198.51.100.9' };
    expect(await recordedIp(ctx, user, headers)).toBe('203.0.113.50');
  });

  it('ignores the client IP header and X-Forwarded-For from a peer it does not trust', async () => {
    const user = await registerUser(ctx);
    const headers = { 'x-real-ip': '203.0.113.50', 'x-forwarded-for': '198.51.100.9' };
    expect(await recordedIp(ctx, user, headers, '127.0.0.2')).toBe('127.0.0.2');
  });
});

describe('a TRUST_PROXY that lets clients write their own address stops the start', () => {
  it.each([
    ['true', /TRUST_PROXY=true is refused.*left-most.*TRUST_PROXY=loopback/],
    ['1', /TRUST_PROXY=1 is refused.*hop count.*TRUST_PROXY=loopback/],
  ])('exits non-zero for TRUST_PROXY=%s, saying what to write instead', async (value, message) => {
    const db = await createDatabase('sqlite');
    try {
      const run = await runUntilExit({ DATABASE_URL: db.url, TRUST_PROXY: value });
      expect(run.timedOut, run.output).toBe(false);
      expect(run.code, run.output).not.toBe(0);
      expect(run.code, run.output).not.toBeNull();
      expect(run.output).toMatch(message);
      expect(run.output, 'no stack trace').not.toMatch(/\n\s+at [\w.<]+ \(|node:internal/);
    } finally {
      await db.drop();
    }
  });

  it('exits non-zero for CLIENT_IP_HEADER without TRUST_PROXY', async () => {
    const db = await createDatabase('sqlite');
    try {
      const run = await runUntilExit({ DATABASE_URL: db.url, CLIENT_IP_HEADER: 'cf-connecting-ip' });
      expect(run.code, run.output).not.toBe(0);
      expect(run.code, run.output).not.toBeNull();
      expect(run.output).toMatch(/CLIENT_IP_HEADER.*TRUST_PROXY/);
    } finally {
      await db.drop();
    }
  });
});
