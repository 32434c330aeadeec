/**
 * Issue 4, signing keys over real HTTP on SQLite and PostgreSQL: `keys rotate` with running servers (tokens of
 * the old key stay valid, new tokens carry the new kid, the JWKS lists both), `keys retire`, and tokens of a
 * retired or unknown kid refused.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createLocalJWKSet, generateKeyPair, jwtVerify, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { expectConversationOk } from './support/assertions.ts';
import {
  b64url,
  expectInvalidToken,
  getWithToken,
  postForm,
  type RegisteredUser,
  registerUser,
  request,
  sleep,
  splitToken,
} from './support/client.ts';
import type { Base } from './support/grants.ts';
import {
  COMPILE_CACHE,
  DIALECTS,
  GATEHOUSE_SECRET,
  ROOT,
  type RunningServer,
  type ServerContext,
  startServer,
  useServer,
} from './support/server.ts';

vi.setConfig({ testTimeout: 30_000, hookTimeout: 60_000 });

async function keysCommand(databaseUrl: string, args: string[]): Promise<{ code: number; out: string }> {
  return await new Promise((resolve) => {
    execFile(
      process.execPath,
      ['src/main.ts', 'keys', ...args],
      {
        cwd: ROOT,
        env: {
          PATH: process.env.PATH ?? '',
          HOME: process.env.HOME ?? '',
          ...COMPILE_CACHE,
          DATABASE_URL: databaseUrl,
          GATEHOUSE_SECRET,
          LOG_LEVEL: 'warn',
        },
        timeout: 30_000,
      },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
        resolve({ code, out: `${stdout}${stderr}` });
      },
    );
  });
}

async function login(ctx: ServerContext, u: RegisteredUser, on: Base = ctx) {
  const r = await postForm(on.url('/token'), {
    grant_type: 'password',
    username: u.username,
    password: u.password,
  });
  expect(r.status, r.text).toBe(200);
  ctx.track(r.json.access_token);
  return { access: r.json.access_token as string, refresh: r.json.refresh_token as string };
}

async function jwks(on: Base): Promise<{ keys: Array<Record<string, string>> }> {
  const r = await request(on.url('/.well-known/jwks.json'));
  expect(r.status, r.text).toBe(200);
  return r.json;
}

async function kids(on: Base): Promise<string[]> {
  return (await jwks(on)).keys.map((k) => k.kid as string).sort();
}

function kidOf(token: string): string {
  return splitToken(token).header.kid as string;
}

describe.each(DIALECTS)('sessions: signing keys (%s)', (dialect) => {
  const ctx = useServer(dialect);
  let b: RunningServer | undefined;
  const B: Base = { url: (p) => b!.url(p) };
  beforeAll(async () => {
    b = await startServer({ databaseUrl: ctx.db.url });
  }, 60_000);
  afterAll(async () => {
    await b?.stop();
  }, 30_000);

  // shared across the ordered tests below
  let user: RegisteredUser;
  let oldToken = '';
  let oldRefresh = '';
  let oldKid = '';
  let newToken = '';
  let newKid = '';

  it('rotation with running servers: the old token stays valid, new tokens carry a new kid, the JWKS lists both', async () => {
    user = await registerUser(ctx);
    const first = await login(ctx, user);
    oldToken = first.access;
    oldRefresh = first.refresh;
    oldKid = kidOf(oldToken);
    expect(oldKid).toBeTruthy();
    expect(await kids(ctx)).toContain(oldKid);
    // both instances have verified the old token (warm caches)
    await expectConversationOk(ctx, oldToken, user.username, 'old token on A before rotation');
    await expectConversationOk(B, oldToken, user.username, 'old token on B before rotation');
    expect(await kids(B)).toContain(oldKid);

    const rot = await keysCommand(ctx.db.url, ['rotate']);
    expect(rot.code, rot.out).toBe(0);
    await sleep(1200); // "every instance signs with it from its next login on (within a second)"

    const second = await login(ctx, user);
    newToken = second.access;
    newKid = kidOf(newToken);
    expect(newKid, 'a login after rotation must be signed by the new key').not.toBe(oldKid);
    // the JWKS of the instance that signed lists both
    const afterA = await kids(ctx);
    expect(afterA).toContain(oldKid);
    expect(afterA).toContain(newKid);
    // B signs with the new key too
    const onB = await login(ctx, user, B);
    expect(kidOf(onB.access)).toBe(newKid);
    // tokens of both keys work on both instances
    for (const [what, on] of [
      ['A', ctx],
      ['B', B],
    ] as const) {
      await expectConversationOk(on, oldToken, user.username, `old-key token on ${what}`);
      await expectConversationOk(on, newToken, user.username, `new-key token on ${what}`);
      await expectConversationOk(on, onB.access, user.username, `new-key token from B on ${what}`);
    }
    // a relying party using the JWKS verifies both (RFC 9068 resource server)
    const set = createLocalJWKSet(await jwks(ctx));
    for (const t of [oldToken, newToken]) {
      const { payload } = await jwtVerify(t, set, { typ: 'at+jwt', algorithms: ['EdDSA'] });
      expect(payload.sub).toBe(String(user.id));
    }
    // a refresh of the pre-rotation session gets a new-key access token in the same session
    const r = await postForm(ctx.url('/token'), { grant_type: 'refresh_token', refresh_token: oldRefresh });
    expect(r.status, r.text).toBe(200);
    expect(kidOf(r.json.access_token)).toBe(newKid);
    expect(splitToken(r.json.access_token).payload.sid).toBe(splitToken(oldToken).payload.sid);
    // keys list shows both
    const list = await keysCommand(ctx.db.url, ['list']);
    expect(list.code, list.out).toBe(0);
    expect(list.out).toContain(oldKid);
    expect(list.out).toContain(newKid);
  });

  it('the JWKS of every instance lists the new key once any instance signs with it', async () => {
    expect(newKid, 'depends on the rotation test').toBeTruthy();
    // B has signed with the new key itself above; both JWKS must publish it, and keep the old one
    for (const [what, on] of [
      ['A', ctx],
      ['B', B],
    ] as const) {
      const k = await kids(on);
      expect(k, `JWKS of ${what}`).toContain(newKid);
      expect(k, `JWKS of ${what}`).toContain(oldKid);
    }
  });

  it('refuses to retire the signing key, or an unknown kid; nothing changes', async () => {
    expect(newKid).toBeTruthy();
    const signing = await keysCommand(ctx.db.url, ['retire', newKid]);
    expect(signing.code, signing.out).not.toBe(0);
    const unknown = await keysCommand(ctx.db.url, ['retire', `nope-${randomUUID()}`]);
    expect(unknown.code, unknown.out).not.toBe(0);
    const bad = await keysCommand(ctx.db.url, ['frobnicate']);
    expect(bad.code, bad.out).not.toBe(0);
    await expectConversationOk(ctx, newToken, user.username, 'new-key token');
    await expectConversationOk(ctx, oldToken, user.username, 'old-key token');
  });

  describe('retired and unknown kids', () => {
    let c: RunningServer | undefined;
    const C: Base = { url: (p) => c!.url(p) };
    afterAll(async () => {
      await c?.stop();
    }, 30_000);

    it('after `keys retire <old kid>`, an instance (re)started on the database refuses old-key tokens and drops the key from its JWKS', async () => {
      expect(oldKid).toBeTruthy();
      const r = await keysCommand(ctx.db.url, ['retire', oldKid]);
      expect(r.code, r.out).toBe(0);
      c = await startServer({ databaseUrl: ctx.db.url });
      expectInvalidToken(await getWithToken(C.url('/conversation'), oldToken), 'token of a retired key');
      expectInvalidToken(
        await getWithToken(C.url('/users/me'), oldToken),
        'token of a retired key (/users/me)',
      );
      await expectConversationOk(C, newToken, user.username, 'token of the signing key');
      const k = await kids(C);
      expect(k).toContain(newKid);
      expect(k).not.toContain(oldKid);
      // retiring it again is refused
      const again = await keysCommand(ctx.db.url, ['retire', oldKid]);
      expect(again.code, again.out).not.toBe(0);
    });

    it('a validly signed token with an unknown kid, or with a real kid but a foreign key, is refused', async () => {
      expect(newToken).toBeTruthy();
      const { publicKey: _pub, privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
      const claims = splitToken(newToken).payload;
      const sign = async (kid: string | undefined) => {
        const header: Record<string, string> = { alg: 'EdDSA', typ: 'at+jwt' };
        if (kid !== undefined) header.kid = kid;
        return await new SignJWT({ ...claims, jti: randomUUID() })
          .setProtectedHeader(header as { alg: string })
          .sign(privateKey);
      };
      const forged = [
        ['unknown kid, foreign key', await sign(`k-${randomUUID()}`)],
        ['real kid, foreign key', await sign(newKid)],
        ['retired kid, foreign key', await sign(oldKid)],
        ['no kid, foreign key', await sign(undefined)],
      ] as const;
      // a real signature under a header whose kid was swapped
      const [, p, s] = newToken.split('.');
      const swapped = `${b64url(JSON.stringify({ ...splitToken(newToken).header, kid: `x${newKid}` }))}.${p}.${s}`;
      for (const on of [ctx, B, C] as Base[]) {
        for (const [what, t] of forged)
          expectInvalidToken(await getWithToken(on.url('/conversation'), t), what);
        expectInvalidToken(await getWithToken(on.url('/conversation'), swapped), 'swapped kid');
        // the real token still works after the unknown-kid look-ups
        await expectConversationOk(on, newToken, user.username, 'real token after forged kids');
      }
    });

    it('a second rotation: a token signed on A verifies at once on B and C, and their JWKS already publish its key', async () => {
      expect(newKid).toBeTruthy();
      const rot = await keysCommand(ctx.db.url, ['rotate']);
      expect(rot.code, rot.out).toBe(0);
      await sleep(1200);
      const t = await login(ctx, user);
      const kid3 = kidOf(t.access);
      expect(kid3).not.toBe(newKid);
      expect(kid3).not.toBe(oldKid);
      // A relying party behind the load balancer may fetch the JWKS from any instance: without downtime means
      // a key that signs is published by every instance (B and C have not signed anything since the rotation).
      const problems: string[] = [];
      for (const [what, on] of [
        ['A', ctx],
        ['B', B],
        ['C', C],
      ] as const) {
        const k = await kids(on);
        if (!k.includes(kid3))
          problems.push(`JWKS of ${what} lacks the signing kid ${kid3}: ${k.join(', ')}`);
        if (!k.includes(newKid)) problems.push(`JWKS of ${what} lacks the previous kid ${newKid}`);
      }
      for (const [what, on] of [
        ['A', ctx],
        ['B', B],
        ['C', C],
      ] as const) {
        const r = await getWithToken(on.url('/conversation'), t.access);
        if (r.status !== 200) problems.push(`${what} refused the new-key token: ${r.status} ${r.text}`);
        const prev = await getWithToken(on.url('/conversation'), newToken);
        if (prev.status !== 200)
          problems.push(`${what} refused the previous-key token: ${prev.status} ${prev.text}`);
      }
      expect(problems).toEqual([]);
    });
  });
});
