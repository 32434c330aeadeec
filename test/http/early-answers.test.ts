import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, loginToken, registerUser, type TestApp } from '../support/build-test-app.ts';
import { dialects } from '../support/dialects.ts';
import { parseRawAnswer, rawExchange } from '../support/raw-exchange.ts';

// Found from outside: answers given before the body arrived, and bodies on paths no route takes.
describe.each(dialects)('answers before the body on %s', (dialect) => {
  let t: TestApp;
  let port: number;
  beforeAll(async () => {
    t = await buildTestApp(dialect, { requestTimeoutMs: 600 });
    await t.app.listen({ port: 0, host: '127.0.0.1' });
    port = (t.app.server.address() as AddressInfo).port;
    await registerUser(t.app, { username: 'early', email: 'early@example.com' });
  });
  afterAll(async () => {
    await t.close();
  });

  // Anywhere: a second answer follows the first's body on the same line.
  const statusLines = (raw: string) => raw.match(/HTTP\/1\.1 \d{3} [^\r\n]*/g) ?? [];

  // RFC 9112 §9.3: one answer per request. The request timeout wrote a 408 after the 401 on the same connection.
  it('answers a request whose body stalls once: no 408 after its answer', async () => {
    const raw = await rawExchange(
      port,
      'POST /logout HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\nabc',
    );
    expect(statusLines(raw)).toEqual(['HTTP/1.1 401 Unauthorized']);
  });

  it('still answers 408 to a request whose body stalls before any answer', async () => {
    const token = await loginToken(t.app, 'early');
    const raw = await rawExchange(
      port,
      `POST /conversation/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"te`,
    );
    expect(statusLines(raw)).toEqual(['HTTP/1.1 408 Request Timeout']);
  });

  // Reading every body under the size limit first had made these 413, and dropped Allow.
  it.each([
    ['POST /nope', 'application/octet-stream', 404, undefined],
    ['POST /nope', undefined, 404, undefined],
    ['PUT /token', 'application/x-www-form-urlencoded', 405, 'POST'],
    ['DELETE /conversation', 'text/xml', 405, 'GET, HEAD'],
  ])('answers %s with a large %s body as without one: %i', async (line, type, status, allow) => {
    const body = 'x'.repeat(40_000);
    const answer = parseRawAnswer(
      await rawExchange(
        port,
        `${line} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n${type ? `Content-Type: ${type}\r\n` : ''}Content-Length: ${body.length}\r\n\r\n${body}`,
      ),
    );
    expect(answer.statusLine).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
    expect(answer.headers.allow).toBe(allow);
  });

  it.each([
    ['a JSON body it does not read', 'application/json', 'bye'],
    ['a JSON object', 'application/json', '{"all": true}'],
    ['bytes that are not UTF-8', 'application/json', '\u00ff'],
  ])('logs out with %s', async (_label, type, payload) => {
    const token = await loginToken(t.app, 'early');
    const response = await t.app.inject({
      method: 'POST',
      url: '/logout',
      headers: { authorization: `Bearer ${token}`, 'content-type': type },
      payload: Buffer.from(payload, 'latin1'),
    });
    expect(response.statusCode, response.body).toBe(204);
    const after = await t.app.inject({
      method: 'GET',
      url: '/conversation',
      headers: { authorization: `Bearer ${token}` },
    });
    expect(after.statusCode).toBe(401);
  });
});
