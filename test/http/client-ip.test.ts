import { afterEach, describe, expect, it } from 'vitest';
import { buildTestApp, registration, STRONG_PASSWORD, type TestApp } from '../support/build-test-app.ts';
import { dialects } from '../support/dialects.ts';

interface From {
  remoteAddress: string;
  headers?: Record<string, string>;
}

describe.each(dialects)('the client address on %s', (dialect) => {
  let t: TestApp | undefined;
  afterEach(async () => {
    await t?.close();
    t = undefined;
  });

  const start = async (env: Record<string, string> = {}) => {
    t = await buildTestApp(dialect, { env });
    const registered = await t.app.inject({ method: 'POST', url: '/register/', payload: registration() });
    expect(registered.statusCode).toBe(200);
    return t;
  };

  const logLines = (app: TestApp, requestId: string) =>
    app.logs.map((line) => JSON.parse(line)).filter((entry) => entry.reqId === requestId);

  /**
   * Logs in from the given peer and answers the address the session, the audit line and the request log line
   * recorded, after checking that they agree.
   */
  const recordedIp = async (app: TestApp, from: From): Promise<string> => {
    const login = await app.app.inject({
      method: 'POST',
      url: '/token',
      remoteAddress: from.remoteAddress,
      headers: from.headers ?? {},
      payload: { username: 'alice', password: STRONG_PASSWORD },
    });
    expect(login.statusCode, login.body).toBe(200);
    const sessions = await app.app.inject({
      method: 'GET',
      url: '/users/me/sessions',
      headers: { authorization: `Bearer ${login.json().access_token}` },
    });
    const current = (sessions.json().sessions as { current: boolean; ip_address: string | null }[]).find(
      (session) => session.current,
    );
    const lines = logLines(app, String(login.headers['x-request-id']));
    const audit = lines.find((entry) => entry.event === 'login_succeeded');
    const request = lines.find((entry) => entry.msg === 'request');
    expect(audit?.ip).toBe(current?.ip_address);
    expect(request?.ip).toBe(current?.ip_address);
    return current?.ip_address ?? 'none';
  };

  const forwarded = (remoteAddress: string, xff: string, more: Record<string, string> = {}): From => ({
    remoteAddress,
    headers: { 'x-forwarded-for': xff, ...more },
  });

  it('records the socket address whatever a rotating X-Forwarded-For says when TRUST_PROXY is unset', async () => {
    const app = await start();
    const seen = new Set<string>();
    for (const forged of ['203.0.113.1', '203.0.113.2', 'spoofed, 203.0.113.3', '127.0.0.1']) {
      seen.add(await recordedIp(app, forwarded('198.51.100.20', forged)));
    }
    expect([...seen]).toEqual(['198.51.100.20']);
  });

  it('takes the right-most untrusted X-Forwarded-For entry from a trusted proxy, ignoring a spoofed left part', async () => {
    const app = await start({ TRUST_PROXY: '10.0.0.0/8' });
    expect(await recordedIp(app, forwarded('10.0.0.5', 'spoofed, 203.0.113.7'))).toBe('203.0.113.7');
    expect(await recordedIp(app, forwarded('10.0.0.5', '198.51.100.66, 203.0.113.7'))).toBe('203.0.113.7');
  });

  it('tells two real clients behind one trusted proxy apart', async () => {
    const app = await start({ TRUST_PROXY: '10.0.0.0/8' });
    const first = await recordedIp(app, forwarded('10.0.0.5', '203.0.113.7'));
    const second = await recordedIp(app, forwarded('10.0.0.5', '203.0.113.8'));
    expect([first, second]).toEqual(['203.0.113.7', '203.0.113.8']);
  });

  it('ignores X-Forwarded-For from a peer that is not a trusted proxy', async () => {
    const app = await start({ TRUST_PROXY: '10.0.0.0/8' });
    expect(await recordedIp(app, forwarded('192.0.2.9', '203.0.113.7'))).toBe('192.0.2.9');
    expect(await recordedIp(app, { remoteAddress: '10.0.0.5' })).toBe('10.0.0.5');
  });

  it('walks a chain of trusted proxies back to the client', async () => {
    const app = await start({ TRUST_PROXY: '127.0.0.1,10.0.0.0/8' });
    expect(await recordedIp(app, forwarded('127.0.0.1', '198.51.100.9, 10.1.2.3'))).toBe('198.51.100.9');
  });

  it('records the nearest trusted hop, never the text, when an entry is not an address', async () => {
    const app = await start({ TRUST_PROXY: '127.0.0.1,10.0.0.0/8' });
    expect(await recordedIp(app, forwarded('127.0.0.1', `${'x'.repeat(2000)}, 10.1.2.3`))).toBe('10.1.2.3');
  });

  it('handles IPv6 peers and clients, in canonical form', async () => {
    const app = await start({ TRUST_PROXY: 'fd00::/8' });
    expect(await recordedIp(app, forwarded('fd00::1', '2001:DB8:0::7'))).toBe('2001:db8::7');
    expect(await recordedIp(app, forwarded('2001:db8::9', '203.0.113.7'))).toBe('2001:db8::9');
  });

  it('honours CLIENT_IP_HEADER from a trusted proxy and ignores it from anyone else', async () => {
    const app = await start({ TRUST_PROXY: '10.0.0.0/8', CLIENT_IP_HEADER: 'X-Real-IP' });
    const real = { 'x-real-ip': '203.0.113.50' };
    expect(await recordedIp(app, forwarded('10.0.0.5', '198.51.100.1', real))).toBe('203.0.113.50');
    expect(await recordedIp(app, { remoteAddress: '10.0.0.5', headers: real })).toBe('203.0.113.50');
    expect(await recordedIp(app, forwarded('192.0.2.9', '198.51.100.1', real))).toBe('192.0.2.9');
  });

  it('falls back to X-Forwarded-For when CLIENT_IP_HEADER does not hold one address', async () => {
    const app = await start({ TRUST_PROXY: '10.0.0.0/8', CLIENT_IP_HEADER: 'cf-connecting-ip' });
    for (const bad of ['unknown', '203.0.113.50, 203.0.113.51', '']) {
      expect(await recordedIp(app, forwarded('10.0.0.5', '198.51.100.1', { 'cf-connecting-ip': bad }))).toBe(
        '198.51.100.1',
      );
    }
  });

  /** Sends a request through a trusted proxy at 10.0.0.5 for the client 203.0.113.7, and answers its log lines. */
  const proxiedLogLines = async (
    request: { method: 'GET' | 'POST'; url: string; payload?: object },
    status: number,
  ) => {
    const app = await start({ TRUST_PROXY: '10.0.0.0/8' });
    const response = await app.app.inject({
      ...request,
      remoteAddress: '10.0.0.5',
      headers: { 'x-forwarded-for': 'spoofed, 203.0.113.7' },
    });
    expect(response.statusCode).toBe(status);
    return logLines(app, String(response.headers['x-request-id']));
  };

  it('writes the same address in the audit line of a registration', async () => {
    const payload = registration({ username: 'bob', email: 'bob@example.com' });
    const lines = await proxiedLogLines({ method: 'POST', url: '/register/', payload }, 200);
    expect(lines.find((entry) => entry.event === 'user_registered')?.ip).toBe('203.0.113.7');
  });

  it('logs the client address of a request to an unknown path', async () => {
    const lines = await proxiedLogLines({ method: 'GET', url: '/no-such-path' }, 404);
    expect(lines.find((entry) => entry.msg === 'request')?.ip).toBe('203.0.113.7');
  });
});
