/**
 * Hardening issue, parts 2 and 3: no password check may stall the event loop (zxcvbn on long passwords, bcrypt
 * verification of imported hashes), wrong-password timing is the same for argon2, bcrypt and unknown accounts,
 * and the password policy runs on the one NFKC-normalised string that is hashed.
 */
import { performance } from 'node:perf_hooks';
import { hashSync as bcryptHash } from '@node-rs/bcrypt';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  expect422,
  median,
  postForm,
  postJson,
  type RegisteredUser,
  registerUser,
  request,
  strongPassword,
  uniqueName,
} from './support/client.ts';
import {
  createDatabase,
  DIALECTS,
  type RunningServer,
  type ServerContext,
  setPasswordHash,
  startServer,
  type TestDatabase,
  useServer,
} from './support/server.ts';

// What is measured is the event loop, not the queue bound: on a busy machine, six bcrypt checks queued behind one hash
// slot can wait past the default 1 s and be shed (503), which is the bound working, not a failure here.
// Hashes wait their turn rather than be shed, and run at normal priority: at the default (SCHED_IDLE) a hash gets a
// core only when nothing else wants one, and in CI the other suites running beside this server always do, so a run
// of 21 logins once took past a minute.
const QUEUE_PATIENCE = { HASH_QUEUE_TIMEOUT_MS: '30000', HASH_THREAD_PRIORITY: 'normal' };

vi.setConfig({ testTimeout: 60_000, hookTimeout: 90_000 });

const toFullwidth = (s: string) =>
  [...s].map((c) => (/[!-~]/.test(c) ? String.fromCodePoint((c.codePointAt(0) ?? 0) + 0xfee0) : c)).join('');

async function healthzLatencies(server: RunningServer, n: number, gapMs: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const r = await fetch(server.url('/healthz'), { signal: AbortSignal.timeout(15_000) });
    await r.arrayBuffer();
    out.push(performance.now() - t0);
    await new Promise((res) => setTimeout(res, gapMs));
  }
  return out;
}

/** Runs `connections` closed loops of `fn` for `ms`, probing /healthz meanwhile; returns rest and loaded p50. */
async function loopLatency(
  server: RunningServer,
  connections: number,
  ms: number,
  fn: () => Promise<number>,
): Promise<{ rest: number; loaded: number; statuses: Map<number, number> }> {
  await healthzLatencies(server, 5, 20); // warm up
  const rest = median(await healthzLatencies(server, 20, 30));
  const statuses = new Map<number, number>();
  const deadline = Date.now() + ms;
  const loops = Array.from({ length: connections }, async () => {
    while (Date.now() < deadline) {
      const s = await fn().catch(() => -1);
      statuses.set(s, (statuses.get(s) ?? 0) + 1);
    }
  });
  await new Promise((res) => setTimeout(res, 300)); // let the load start
  const probes: number[] = [];
  while (Date.now() < deadline - 100) {
    probes.push(...(await healthzLatencies(server, 1, 40)));
  }
  await Promise.all(loops);
  return { rest, loaded: median(probes), statuses };
}

const bound = (rest: number) => 5 * rest + 50;

describe('zxcvbn cannot stall the event loop (sqlite)', () => {
  const ctx = useServer('sqlite');
  const reg = (password: string, over: Record<string, unknown> = {}) => {
    const username = uniqueName('zx');
    return postJson(
      ctx.url('/register/'),
      { username, email: `${username}@example.com`, password, age: 30, level: 'beginner', ...over },
      {},
    );
  };

  it('three connections posting 128-digit weak passwords (422) keep /healthz p50 within 5x rest + 50 ms', async () => {
    const digits = '0123456789'.repeat(13).slice(0, 128);
    const first = await reg(digits);
    expect422(first, 'password');
    const { rest, loaded, statuses } = await loopLatency(
      ctx.server,
      3,
      2500,
      async () => (await reg(digits)).status,
    );
    expect([...statuses.keys()], 'every answer is a 422').toEqual([422]);
    expect(
      loaded,
      `healthz p50 ${loaded.toFixed(1)} ms under load vs ${rest.toFixed(1)} ms at rest`,
    ).toBeLessThanOrEqual(bound(rest));
  });

  it('1024-character passwords with an invalid other field are answered without running zxcvbn (no stall)', async () => {
    const long = '01234567'.repeat(128);
    const first = await reg(long, { email: 'not-an-email' });
    expect422(first, 'email');
    const { rest, loaded, statuses } = await loopLatency(
      ctx.server,
      3,
      3000,
      async () => (await reg(long, { email: 'not-an-email' })).status,
    );
    expect([...statuses.keys()]).toEqual([422]);
    expect(
      loaded,
      `healthz p50 ${loaded.toFixed(1)} ms under load vs ${rest.toFixed(1)} ms at rest`,
    ).toBeLessThanOrEqual(bound(rest));
  });

  it('1024-character weak passwords with valid fields: the cost zxcvbn may take is capped (no stall)', async () => {
    const long = '01234567'.repeat(128);
    const { rest, loaded, statuses } = await loopLatency(
      ctx.server,
      3,
      2500,
      async () => (await reg(long)).status,
    );
    expect([...statuses.keys()]).toEqual([422]);
    expect(
      loaded,
      `healthz p50 ${loaded.toFixed(1)} ms under load vs ${rest.toFixed(1)} ms at rest`,
    ).toBeLessThanOrEqual(bound(rest));
  });
});

describe.each(DIALECTS)('bcrypt accounts (imported $2b$12$ hashes, realistic argon2) (%s)', (dialect) => {
  let db: TestDatabase;
  let server: RunningServer;
  let ctx: ServerContext;
  let bUser: RegisteredUser;
  let aUser: RegisteredUser;
  const bcryptPassword = `imported ${strongPassword()}`;

  beforeAll(async () => {
    db = await createDatabase(dialect);
    server = await startServer({ databaseUrl: db.url, fastArgon2: false, env: QUEUE_PATIENCE });
    ctx = { server, db, secrets: new Set(), track: (s) => s, url: (p) => server.url(p) };
    bUser = await registerUser(ctx);
    aUser = await registerUser(ctx);
    await server.stop();
    await setPasswordHash(db, [bUser.id], bcryptHash(bcryptPassword, 12));
    server = await startServer({ databaseUrl: db.url, fastArgon2: false, env: QUEUE_PATIENCE });
    ctx = { server, db, secrets: new Set(), track: (s) => s, url: (p) => server.url(p) };
  }, 90_000);
  afterAll(async () => {
    await server?.stop();
    await db?.drop();
  });

  const tryLogin = (username: string, password: string) =>
    postForm(server.url('/token'), { grant_type: 'password', username, password });

  it('six connections of wrong passwords against one bcrypt account keep /healthz p50 within 5x rest + 50 ms', async () => {
    const { rest, loaded, statuses } = await loopLatency(
      server,
      6,
      3000,
      async () => (await tryLogin(bUser.username, `wrong ${strongPassword()}`)).status,
    );
    expect([...statuses.keys()], 'wrong passwords answer 400').toEqual([400]);
    expect(
      loaded,
      `healthz p50 ${loaded.toFixed(1)} ms under load vs ${rest.toFixed(1)} ms at rest`,
    ).toBeLessThanOrEqual(bound(rest));
  });

  it('a wrong password takes about as long for a bcrypt account as for an argon2 account or an unknown user', async () => {
    const samples: Record<'bcrypt' | 'argon2' | 'unknown', number[]> = {
      bcrypt: [],
      argon2: [],
      unknown: [],
    };
    const unknown = uniqueName('ghost');
    for (let i = 0; i < 7; i++) {
      for (const [k, name] of [
        ['bcrypt', bUser.username],
        ['argon2', aUser.username],
        ['unknown', unknown],
      ] as const) {
        const t0 = performance.now();
        const r = await tryLogin(name, `wrong ${strongPassword()}`);
        const dt = performance.now() - t0;
        expect(r.status, r.text).toBe(400);
        expect(r.json.error).toBe('invalid_grant');
        if (i > 0) samples[k].push(dt); // the first round warms up
      }
    }
    const m = {
      bcrypt: median(samples.bcrypt),
      argon2: median(samples.argon2),
      unknown: median(samples.unknown),
    };
    const lo = Math.min(m.bcrypt, m.argon2, m.unknown);
    const hi = Math.max(m.bcrypt, m.argon2, m.unknown);
    expect(
      hi,
      `wrong-password medians: bcrypt ${m.bcrypt.toFixed(0)} ms, argon2 ${m.argon2.toFixed(0)} ms, unknown ${m.unknown.toFixed(0)} ms`,
    ).toBeLessThanOrEqual(2 * lo + 30);
    // 21 logins in a row, each waiting the bcrypt-cost failure floor: the assertion is a ratio of medians, and only the
    // time it may take on a loaded host grows.
  }, 180_000);

  it('the right password still logs in a bcrypt account (control)', async () => {
    const r = await tryLogin(bUser.username, bcryptPassword);
    expect(r.status, r.text).toBe(200);
  });
});

describe.each(DIALECTS)('one normalised password (%s)', (dialect) => {
  const ctx = useServer(dialect);
  const reg = (password: string) => {
    const username = uniqueName('nf');
    return postJson(ctx.url('/register/'), {
      username,
      email: `${username}@example.com`,
      password,
      age: 30,
      level: 'beginner',
    });
  };

  it('refuses fullwidth ｐａｓｓｗｏｒｄ１２３４ as it refuses password1234 (the policy sees the NFKC form)', async () => {
    expect422(await reg('password1234'), 'password');
    const r = await reg(toFullwidth('password1234'));
    if (r.status === 200) {
      const l = await postForm(ctx.url('/token'), { username: r.json.username, password: 'password1234' });
      expect.soft(l.status, 'and it logs in with password1234 typed directly').not.toBe(200);
    }
    expect422(r, 'password');
  });

  it('counts length on the NFKC form: 7 letters spelled decomposed (14 code points) are too short', async () => {
    const nfc = 'ḱñẃśźýç';
    const nfd = nfc.normalize('NFD');
    expect([...nfd].length).toBe(14);
    expect422(await reg(nfc), 'password');
    const r = await reg(nfd);
    expect422(r, 'password');
  });

  // Found from outside: one typed character that NFKC spells out passed the minimum (U+FDFA is 18 after it).
  it('counts the minimum on what is typed: U+FDFA alone, or two squared katakana words, are too short', async () => {
    expect422(await reg('\ufdfa'), 'password');
    expect422(await reg('\u3300\u3301'), 'password');
  });

  it('counts the 1024 maximum on the NFKC form: 400 ligatures (1200 characters after NFKC) are too long', async () => {
    const lig = Array.from({ length: 400 }, () => (Math.random() < 0.5 ? '\ufb03' : '\ufb04')).join('');
    expect(lig.normalize('NFKC').length).toBe(1200);
    const r = await reg(lig);
    expect422(r, 'password');
  });

  it('"new equals current" compares NFKC forms: the fullwidth spelling of the current password is refused like the same string', async () => {
    const u = await registerUser(ctx);
    const t = await postForm(ctx.url('/token'), { username: u.username, password: u.password });
    expect(t.status, t.text).toBe(200);
    const auth = { authorization: `Bearer ${t.json.access_token}` };
    const same = await postJson(
      ctx.url('/users/me/password'),
      { current_password: u.password, new_password: u.password },
      auth,
    );
    expect(same.status, same.text).toBe(422);
    const fw = await postJson(
      ctx.url('/users/me/password'),
      { current_password: u.password, new_password: toFullwidth(u.password) },
      auth,
    );
    expect(fw.status, `fullwidth spelling of the current password: ${fw.text}`).toBe(same.status);
    expect(fw.json?.detail?.[0]?.type).toBe(same.json?.detail?.[0]?.type);
    // the fullwidth spelling logs in (control: NFKC on both sides)
    const l = await postForm(ctx.url('/token'), { username: u.username, password: toFullwidth(u.password) });
    expect(l.status, l.text).toBe(200);
    void request;
  });
});
