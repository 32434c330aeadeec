import { createHash } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { hash } from '@node-rs/argon2';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  buildTestApp,
  loginToken,
  registration,
  STRONG_PASSWORD,
  type TestApp,
} from '../support/build-test-app.ts';
import { dialects } from '../support/dialects.ts';

const sha1 = (text: string) => createHash('sha1').update(text, 'utf8').digest('hex').toUpperCase();

/** `count` lines of made-up suffixes, as the range API pads its answer (count 0). */
const padding = (count: number) =>
  Array.from({ length: count }, (_, i) => `${sha1(`pad${i}`).slice(5)}:0`).join('\r\n');

type Behaviour = (prefix: string, response: ServerResponse) => void;

/** A local stand-in for api.pwnedpasswords.com: answers GET /range/{prefix} as `behaviour` says. */
async function startRangeServer() {
  const requests: { path: string; headers: IncomingHttpHeaders }[] = [];
  let behaviour: Behaviour = (_prefix, response) => response.end(padding(3));
  const server = createServer((request, response) => {
    requests.push({ path: request.url ?? '', headers: request.headers });
    const prefix = /^\/range\/([0-9A-F]{5})$/.exec(request.url ?? '')?.[1];
    if (!prefix) {
      response.statusCode = 404;
      response.end();
      return;
    }
    behaviour(prefix, response);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    answer(next: Behaviour) {
      behaviour = next;
    },
    /** Lists these passwords (with these counts) among padding. */
    list(entries: [string, number][], transform: (suffix: string) => string = (suffix) => suffix) {
      behaviour = (prefix, response) => {
        const lines = entries
          .filter(([password]) => sha1(password).startsWith(prefix))
          .map(([password, count]) => `${transform(sha1(password).slice(5))}:${count}`);
        response.setHeader('content-type', 'text/plain');
        response.end([padding(5), ...lines, padding(5)].join('\r\n'));
      };
    },
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

type RangeServer = Awaited<ReturnType<typeof startRangeServer>>;

const OTHER_STRONG_PASSWORD = 'violet tractor moonlight sandwich';

describe.each(dialects)('breached-password check against a range API on %s', (dialect) => {
  let range: RangeServer;
  let t: TestApp;
  beforeAll(async () => {
    range = await startRangeServer();
  });
  afterAll(async () => {
    await range.close();
  });
  afterEach(async () => {
    await t?.close();
    range.requests.length = 0;
  });
  const build = async (env: Record<string, string> = {}) => {
    t = await buildTestApp(dialect, {
      env: { BREACHED_PASSWORD_CHECK: 'hibp', HIBP_API_URL: range.url, HIBP_TIMEOUT_MS: '300', ...env },
    });
    return t;
  };
  const register = (overrides: Record<string, unknown> = {}) =>
    t.app.inject({ method: 'POST', url: '/register/', payload: registration(overrides) });
  const breachWarnings = () =>
    t.logs.filter((line) => JSON.parse(line).level === 40 && /breached-password/.test(line));

  it('refuses a registration whose password the range API lists, as 422 password_breached, and stores no user', async () => {
    await build();
    range.list([[STRONG_PASSWORD, 42]]);
    const response = await register();
    expect(response.statusCode).toBe(422);
    const [problem] = response.json().detail;
    expect(problem).toMatchObject({ loc: ['body', 'password'], type: 'password_breached' });
    expect(problem.msg).toMatch(/data breach/);
    // The same username is still free.
    expect((await register({ password: OTHER_STRONG_PASSWORD })).statusCode).toBe(200);
  });

  it('asks the range API nothing for a registration that the full hash queue refuses at once', async () => {
    await build({ HASH_CONCURRENCY: '1', HASH_QUEUE_MAX: '0' });
    const slowHash = await hash('slot holder', { memoryCost: 65536, timeCost: 20, parallelism: 1 });
    while (t.passwords.load().inFlight + t.passwords.load().queued > 0) await sleep(10);
    const holding = t.passwords.verify(slowHash, 'not the slot holder');
    const response = await register();
    expect(response.statusCode, response.body).toBe(503);
    expect(response.headers['retry-after']).toBe('1');
    expect(range.requests).toEqual([]);
    await holding;
  });

  it('sends only the first five hex digits of the SHA-1, upper case, and asks for padding', async () => {
    await build();
    range.list([]);
    expect((await register()).statusCode).toBe(200);
    expect(range.requests).toHaveLength(1);
    const [request] = range.requests;
    expect(request?.path).toBe(`/range/${sha1(STRONG_PASSWORD).slice(0, 5)}`);
    expect(request?.headers['add-padding']).toBe('true');
    expect(JSON.stringify(request)).not.toContain(sha1(STRONG_PASSWORD).slice(5, 12));
  });

  it('compares suffixes whatever their letter case', async () => {
    await build();
    range.list([[STRONG_PASSWORD, 3]], (suffix) => suffix.toLowerCase());
    expect((await register()).json().detail[0].type).toBe('password_breached');
  });

  it('accepts a password listed only as padding (count 0)', async () => {
    await build();
    range.list([[STRONG_PASSWORD, 0]]);
    expect((await register()).statusCode).toBe(200);
  });

  it('checks the NFKC form of the password, the one that is hashed', async () => {
    await build();
    range.list([[STRONG_PASSWORD, 7]]);
    const fullwidth = 'ｃｏｒｒｅｃｔ horse battery staple';
    expect(fullwidth.normalize('NFKC')).toBe(STRONG_PASSWORD);
    expect((await register({ password: fullwidth })).json().detail[0].type).toBe('password_breached');
  });

  it('refuses a breached new password on password change, at new_password', async () => {
    await build();
    range.list([[OTHER_STRONG_PASSWORD, 12]]);
    expect((await register()).statusCode).toBe(200);
    const token = await loginToken(t.app);
    const response = await t.app.inject({
      method: 'POST',
      url: '/users/me/password',
      headers: { authorization: `Bearer ${token}` },
      payload: { current_password: STRONG_PASSWORD, new_password: OTHER_STRONG_PASSWORD },
    });
    expect(response.statusCode).toBe(422);
    expect(response.json().detail[0]).toMatchObject({
      loc: ['body', 'new_password'],
      type: 'password_breached',
    });
  });

  it('asks nothing of the range API for a password the common-password check already refuses', async () => {
    await build();
    const response = await register({ password: 'password123456789' });
    expect(response.json().detail[0].type).toBe('password_too_common');
    expect(range.requests).toEqual([]);
  });

  const outages: [string, Behaviour, RegExp][] = [
    ['never answers', () => {}, /no complete answer within 300 ms/],
    [
      'sends its headers and never finishes the body',
      (_prefix, response) => {
        response.writeHead(200, { 'content-type': 'text/plain' });
        response.write(`${padding(2)}\r\n`);
      },
      /no complete answer within 300 ms/,
    ],
    [
      'answers 500',
      (_prefix, response) => {
        response.statusCode = 500;
        response.end('oops');
      },
      /HTTP 500/,
    ],
    ['drops the connection', (_prefix, response) => response.socket?.destroy(), /unreachable/],
    [
      'answers something that is not a range',
      (_prefix, response) => response.end('<html>maintenance</html>'),
      /not a range/,
    ],
  ];

  it.each(outages)(
    'registers anyway, with a warning that names neither password nor hash, when the range API %s',
    async (_what, behaviour, reason) => {
      await build();
      range.answer(behaviour);
      const response = await register();
      expect(response.statusCode, response.body).toBe(200);
      expect(range.requests).toHaveLength(1);
      const warnings = breachWarnings();
      expect(warnings).toHaveLength(1);
      expect(JSON.parse(warnings[0] ?? '{}').reason).toMatch(reason);
      const digest = sha1(STRONG_PASSWORD);
      for (const secret of [
        STRONG_PASSWORD,
        digest.slice(0, 5),
        digest.slice(0, 5).toLowerCase(),
        digest.slice(5),
      ]) {
        expect(t.logs.join('\n')).not.toContain(secret);
      }
    },
  );
});

describe.each(dialects)('breached-password check that fails closed on %s', (dialect) => {
  let range: RangeServer;
  let t: TestApp;
  beforeAll(async () => {
    range = await startRangeServer();
  });
  afterAll(async () => {
    await range.close();
  });
  afterEach(async () => {
    await t?.close();
  });
  const build = async () => {
    t = await buildTestApp(dialect, {
      env: {
        BREACHED_PASSWORD_CHECK: 'hibp',
        BREACHED_PASSWORD_CHECK_FAILURE: 'closed',
        HIBP_API_URL: range.url,
        HIBP_TIMEOUT_MS: '300',
      },
    });
  };
  const register = () => t.app.inject({ method: 'POST', url: '/register/', payload: registration() });

  it('answers a registration 503 with Retry-After and stores no user while the range API is down', async () => {
    await build();
    range.answer((_prefix, response) => {
      response.statusCode = 500;
      response.end();
    });
    const response = await register();
    expect(response.statusCode).toBe(503);
    expect(Number(response.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(response.json()).toMatchObject({ detail: expect.stringMatching(/breached-password check/) });
    range.list([]);
    expect((await register()).statusCode).toBe(200);
  });

  it('answers a password change 503 while the range API is down, and keeps the old password', async () => {
    await build();
    range.list([]);
    expect((await register()).statusCode).toBe(200);
    const token = await loginToken(t.app);
    range.answer((_prefix, response) => response.socket?.destroy());
    const response = await t.app.inject({
      method: 'POST',
      url: '/users/me/password',
      headers: { authorization: `Bearer ${token}` },
      payload: { current_password: STRONG_PASSWORD, new_password: OTHER_STRONG_PASSWORD },
    });
    expect(response.statusCode).toBe(503);
    expect(response.headers['retry-after']).toBeDefined();
    expect(await loginToken(t.app)).toBeTruthy();
  });

  it('still refuses a listed password with 422, and accepts an unlisted one', async () => {
    await build();
    range.list([[STRONG_PASSWORD, 5]]);
    expect((await register()).statusCode).toBe(422);
  });
});

describe.each(dialects)('breached-password check switched off (the default) on %s', (dialect) => {
  it('never calls the range API, even when HIBP_API_URL is set', async () => {
    const range = await startRangeServer();
    const t = await buildTestApp(dialect, { env: { HIBP_API_URL: range.url } });
    try {
      range.list([[STRONG_PASSWORD, 42]]);
      const response = await t.app.inject({ method: 'POST', url: '/register/', payload: registration() });
      expect(response.statusCode).toBe(200);
      expect(range.requests).toEqual([]);
    } finally {
      await t.close();
      await range.close();
    }
  });
});
