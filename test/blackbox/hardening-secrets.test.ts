/**
 * Hardening issue, part 1: secrets at rest. data/ 0700, database files 0600, signing keys and server secrets
 * encrypted with a key-encryption key (GATEHOUSE_SECRET, or data/secret.key generated on the embedded default),
 * required with PostgreSQL, rotation with a comma list, plaintext rows encrypted in place by a migration.
 */
import { createPrivateKey, type KeyObject, randomBytes, randomUUID, sign } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import pg from 'pg';
import { afterAll, describe, expect, it, vi } from 'vitest';
import {
  b64url,
  getWithToken,
  login,
  postForm,
  type RegisteredUser,
  registerUser,
  request,
  splitToken,
} from './support/client.ts';
import {
  LEGACY_KID,
  LEGACY_PRIVATE_D,
  LEGACY_REFRESH_KEY,
  LEGACY_USER,
  writeLegacySqlite,
} from './support/legacy-v0-sqlite.ts';
import {
  createDatabase,
  DIALECTS,
  type Dialect,
  GATEHOUSE_SECRET,
  type RunningServer,
  runUntilExit,
  type ServerContext,
  startServer,
  type TestDatabase,
} from './support/server.ts';

vi.setConfig({ testTimeout: 60_000, hookTimeout: 60_000 });

const newSecret = () => randomBytes(32).toString('base64url');
const mode = (p: string) => statSync(p).mode & 0o777;
const octal = (m: number) => `0${m.toString(8)}`;

/** A ServerContext-like wrapper around a server started by hand (registerUser/login need one). */
function ctxOf(server: RunningServer, db: TestDatabase): ServerContext {
  return {
    server,
    db,
    secrets: new Set<string>(),
    track: (s: string) => s,
    url: (p: string) => server.url(p),
  };
}

type Row = Record<string, unknown>;

async function readRows(
  db: { dialect: Dialect; url: string; sqlitePath?: string },
  table: string,
): Promise<Row[]> {
  if (db.dialect === 'sqlite') {
    const file = db.sqlitePath ?? db.url.replace(/^sqlite:/, '');
    const d = new DatabaseSync(file, { readOnly: true });
    try {
      return d.prepare(`select * from ${table}`).all() as Row[];
    } finally {
      d.close();
    }
  }
  const c = new pg.Client(db.url);
  await c.connect();
  try {
    return (await c.query(`select * from ${table}`)).rows as Row[];
  } finally {
    await c.end();
  }
}

function stringsOf(rows: Row[], skip: string[] = []): string[] {
  const out: string[] = [];
  for (const r of rows) {
    for (const [k, v] of Object.entries(r)) {
      if (skip.includes(k)) continue;
      if (typeof v === 'string') out.push(v);
      else if (Buffer.isBuffer(v) || v instanceof Uint8Array) out.push(Buffer.from(v).toString('latin1'));
    }
  }
  return out;
}

const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

/** Every Ed25519 private key a reader of the database could take from a value as it is stored. */
function candidateKeys(value: string): KeyObject[] {
  const keys: KeyObject[] = [];
  const tryAdd = (f: () => KeyObject) => {
    try {
      const k = f();
      if (k.asymmetricKeyType === 'ed25519') keys.push(k);
    } catch {
      // not a key
    }
  };
  try {
    const j = JSON.parse(value) as Record<string, unknown>;
    if (j && typeof j === 'object' && typeof j.d === 'string') {
      tryAdd(() => createPrivateKey({ key: { kty: 'OKP', crv: 'Ed25519', ...j } as never, format: 'jwk' }));
    }
  } catch {
    // not JSON
  }
  if (value.includes('PRIVATE KEY')) tryAdd(() => createPrivateKey(value));
  for (const enc of ['base64url', 'base64', 'hex'] as const) {
    const raw = Buffer.from(value.trim(), enc);
    if (raw.length === 32) {
      tryAdd(() =>
        createPrivateKey({ key: Buffer.concat([PKCS8_ED25519_PREFIX, raw]), format: 'der', type: 'pkcs8' }),
      );
    }
  }
  return keys;
}

function forgeWith(key: KeyObject, genuine: string): string {
  const { header, payload } = splitToken(genuine);
  const h = b64url(JSON.stringify(header));
  const p = b64url(JSON.stringify({ ...payload, jti: randomUUID() }));
  const sig = sign(null, Buffer.from(`${h}.${p}`), key).toString('base64url');
  return `${h}.${p}.${sig}`;
}

/** Asserts that no value of signing_keys / server_secrets yields a key that signs a token the server accepts. */
async function expectNoUsableKeyAtRest(
  server: RunningServer,
  db: { dialect: Dialect; url: string; sqlitePath?: string },
  genuineToken: string,
): Promise<void> {
  const control = await getWithToken(server.url('/conversation'), genuineToken);
  expect(control.status, `control: the genuine token must be accepted: ${control.text}`).toBe(200);
  const keysRows = await readRows(db, 'signing_keys');
  expect(keysRows.length, 'signing_keys is empty: the check would be vacuous').toBeGreaterThan(0);
  let secretRows: Row[] = [];
  try {
    secretRows = await readRows(db, 'server_secrets');
  } catch {
    // the table may be gone: nothing kept there
  }
  const values = [...stringsOf(keysRows, ['public_jwk']), ...stringsOf(secretRows)];
  for (const v of stringsOf(keysRows, ['public_jwk'])) {
    expect.soft(v, 'a JWK private member "d" is stored in clear in signing_keys').not.toMatch(/"d"\s*:/);
  }
  for (const v of stringsOf(secretRows)) {
    expect.soft(v, 'server_secrets holds a bare 32-byte key in clear').not.toMatch(/^[A-Za-z0-9_-]{43}$/);
  }
  const accepted: string[] = [];
  for (const v of values) {
    for (const k of candidateKeys(v)) {
      const forged = forgeWith(k, genuineToken);
      const r = await getWithToken(server.url('/conversation'), forged);
      if (r.status === 200) accepted.push(`${v.slice(0, 24)}…`);
    }
  }
  expect(accepted, 'a token signed with a key read from the database was accepted').toEqual([]);
}

async function registerAndLogin(
  ctx: ServerContext,
): Promise<{ user: RegisteredUser; access: string; refresh: string }> {
  const user = await registerUser(ctx);
  const r = await postForm(ctx.url('/token'), {
    grant_type: 'password',
    username: user.username,
    password: user.password,
  });
  expect(r.status, r.text).toBe(200);
  return { user, access: r.json.access_token, refresh: r.json.refresh_token };
}

async function refreshOk(server: RunningServer, refresh: string): Promise<string> {
  const r = await postForm(server.url('/token'), { grant_type: 'refresh_token', refresh_token: refresh });
  expect(r.status, `refresh: ${r.text}`).toBe(200);
  expect(typeof r.json.access_token).toBe('string');
  const c = await getWithToken(server.url('/conversation'), r.json.access_token);
  expect(c.status, c.text).toBe(200);
  return r.json.refresh_token as string;
}

describe('embedded SQLite default: file modes and a generated data/secret.key', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('creates data/ 0700, the database files 0600 and data/secret.key 0600 without GATEHOUSE_SECRET, and reuses the key on restart', async () => {
    const tmp = mkdtempSync(path.join(os.tmpdir(), 'gh_hard_'));
    dirs.push(tmp);
    const dataDir = path.join(tmp, 'data');
    const file = path.join(dataDir, 'gatehouse.db');
    const db: TestDatabase = {
      dialect: 'sqlite',
      url: `sqlite:${file}`,
      sqlitePath: file,
      drop: async () => {},
    };
    let server = await startServer({ databaseUrl: db.url, env: { GATEHOUSE_SECRET: undefined } });
    let access = '';
    let refresh = '';
    try {
      const s = await registerAndLogin(ctxOf(server, db));
      access = s.access;
      refresh = s.refresh;
      expect(octal(mode(dataDir)), 'data/ mode').toBe('0700');
      for (const suffix of ['', '-wal', '-shm', '-journal']) {
        if (existsSync(file + suffix))
          expect(octal(mode(file + suffix)), `gatehouse.db${suffix} mode`).toBe('0600');
      }
      const keyFile = path.join(dataDir, 'secret.key');
      expect(existsSync(keyFile), 'data/secret.key was not generated beside the database').toBe(true);
      expect(octal(mode(keyFile)), 'secret.key mode').toBe('0600');
      await expectNoUsableKeyAtRest(server, db, access);
    } finally {
      await server.stop();
    }
    const keyFile = path.join(dataDir, 'secret.key');
    const before = existsSync(keyFile) ? readFileSync(keyFile, 'utf8') : '';
    const decoded = Buffer.from(before.trim(), 'base64url');
    expect(decoded.length, 'secret.key must hold at least 32 bytes (base64url)').toBeGreaterThanOrEqual(32);
    server = await startServer({ databaseUrl: db.url, env: { GATEHOUSE_SECRET: undefined } });
    try {
      expect(readFileSync(keyFile, 'utf8'), 'secret.key must not be regenerated on restart').toBe(before);
      const c = await getWithToken(server.url('/conversation'), access);
      expect(c.status, `an access token issued before the restart: ${c.text}`).toBe(200);
      await refreshOk(server, refresh);
    } finally {
      await server.stop();
    }
  });

  it('tightens an existing data/ directory that is more open than 0700, with a warning', async () => {
    const tmp = mkdtempSync(path.join(os.tmpdir(), 'gh_hard_'));
    dirs.push(tmp);
    const dataDir = path.join(tmp, 'data');
    mkdirSync(dataDir);
    chmodSync(dataDir, 0o755);
    const file = path.join(dataDir, 'gatehouse.db');
    const server = await startServer({ databaseUrl: `sqlite:${file}` });
    try {
      expect(octal(mode(dataDir)), 'an existing 0755 data/ must be tightened').toBe('0700');
      const out = server.output();
      const warned = out
        .split('\n')
        .some(
          (l) =>
            (/"level":\s*40/.test(l) || /\bwarn/i.test(l)) && /data|director|0700|permission|mode/i.test(l),
        );
      expect(warned, `no warning about tightening data/ in the output:\n${out.slice(-2000)}`).toBe(true);
      for (const suffix of ['', '-wal', '-shm']) {
        if (existsSync(file + suffix))
          expect(octal(mode(file + suffix)), `gatehouse.db${suffix}`).toBe('0600');
      }
    } finally {
      await server.stop();
    }
  });
});

describe('GATEHOUSE_SECRET is validated at start', () => {
  const dbs: TestDatabase[] = [];
  afterAll(async () => {
    for (const d of dbs) await d.drop();
  });

  it('refuses to start on PostgreSQL without GATEHOUSE_SECRET, showing how to make one and printing no secret', async () => {
    const db = await createDatabase('postgres');
    dbs.push(db);
    const r = await runUntilExit({ DATABASE_URL: db.url, GATEHOUSE_SECRET: undefined }, 10_000);
    expect(
      r.timedOut,
      `the server kept running without GATEHOUSE_SECRET on PostgreSQL:\n${r.output.slice(-1500)}`,
    ).toBe(false);
    expect(r.code, r.output).not.toBe(0);
    expect(r.code, r.output).not.toBeNull();
    expect(r.output).toContain('GATEHOUSE_SECRET');
    expect(r.output, 'the message must show how to make a secret').toMatch(
      /openssl rand|randomBytes|node -e|npm run gatehouse|base64url/i,
    );
    // no secret printed: no run of 43+ base64url characters (32+ random bytes)
    const printed = r.output.match(/(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43,}(?![A-Za-z0-9_-])/g) ?? [];
    expect(printed, 'something looking like a generated secret was printed').toEqual([]);
  });

  it('refuses a GATEHOUSE_SECRET that is too short, not base64url, or has a bad member in the list', async () => {
    const sqlite = await createDatabase('sqlite');
    const postgres = await createDatabase('postgres');
    dbs.push(sqlite, postgres);
    const cases: [string, string, string][] = [
      ['16 random bytes', sqlite.url, randomBytes(16).toString('base64url')],
      ['31 random bytes', sqlite.url, randomBytes(31).toString('base64url')],
      ['a passphrase (not base64url)', sqlite.url, 'correct horse battery staple and then some more words'],
      ['a list with a short member', sqlite.url, `${newSecret()},${randomBytes(8).toString('base64url')}`],
      ['16 random bytes on PostgreSQL', postgres.url, randomBytes(16).toString('base64url')],
    ];
    const results = await Promise.all(
      cases.map(async ([what, url, secret]) => ({
        what,
        secret,
        r: await runUntilExit({ DATABASE_URL: url, GATEHOUSE_SECRET: secret }, 10_000),
      })),
    );
    for (const { what, secret, r } of results) {
      expect.soft(r.timedOut, `${what}: the server started:\n${r.output.slice(-800)}`).toBe(false);
      expect.soft(r.code, `${what}: ${r.output.slice(-800)}`).not.toBe(0);
      expect.soft(r.output, `${what}: the message must name the variable`).toContain('GATEHOUSE_SECRET');
      expect.soft(r.output.includes(secret), `${what}: the refused secret was echoed`).toBe(false);
    }
  });
});

describe.each(DIALECTS)('signing keys and server secrets encrypted at rest (%s)', (dialect) => {
  const dbs: TestDatabase[] = [];
  afterAll(async () => {
    for (const d of dbs) await d.drop();
  });
  const freshDb = async () => {
    const d = await createDatabase(dialect);
    dbs.push(d);
    return d;
  };

  it('stores no private key in clear: no "d" member, and no key read from the database signs an accepted token', async () => {
    const db = await freshDb();
    const server = await startServer({ databaseUrl: db.url });
    try {
      const { access } = await registerAndLogin(ctxOf(server, db));
      await expectNoUsableKeyAtRest(server, db, access);
    } finally {
      await server.stop();
    }
  });

  it('a refresh token and an access token issued before a restart with the same secret keep working after it', async () => {
    const db = await freshDb();
    let server = await startServer({ databaseUrl: db.url });
    let s: Awaited<ReturnType<typeof registerAndLogin>>;
    try {
      s = await registerAndLogin(ctxOf(server, db));
    } finally {
      await server.stop();
    }
    server = await startServer({ databaseUrl: db.url });
    try {
      const c = await getWithToken(server.url('/conversation'), s.access);
      expect(c.status, c.text).toBe(200);
      const next = await refreshOk(server, s.refresh);
      await refreshOk(server, next);
    } finally {
      await server.stop();
    }
  });

  it('refuses to start (naming GATEHOUSE_SECRET) with a different secret than the one the keys were encrypted with, and adds no key', async () => {
    const db = await freshDb();
    const server = await startServer({ databaseUrl: db.url });
    try {
      await registerAndLogin(ctxOf(server, db));
    } finally {
      await server.stop();
    }
    const keysBefore = (await readRows(db, 'signing_keys')).map((r) => String(r.kid)).sort();
    const r = await runUntilExit({ DATABASE_URL: db.url, GATEHOUSE_SECRET: newSecret() }, 10_000);
    expect(r.timedOut, `started with a secret that cannot decrypt the keys:\n${r.output.slice(-1500)}`).toBe(
      false,
    );
    expect(r.code, r.output).not.toBe(0);
    expect(r.output).toContain('GATEHOUSE_SECRET');
    const keysAfter = (await readRows(db, 'signing_keys')).map((r2) => String(r2.kid)).sort();
    expect(keysAfter, 'a new signing key was created silently').toEqual(keysBefore);
  });

  it('rotation: "new,old" starts on a database encrypted with "old"; earlier access and refresh tokens keep working', async () => {
    const db = await freshDb();
    const oldSecret = newSecret();
    const rotated = `${newSecret()},${oldSecret}`;
    let server = await startServer({ databaseUrl: db.url, env: { GATEHOUSE_SECRET: oldSecret } });
    let s: Awaited<ReturnType<typeof registerAndLogin>>;
    try {
      s = await registerAndLogin(ctxOf(server, db));
    } finally {
      await server.stop();
    }
    server = await startServer({ databaseUrl: db.url, env: { GATEHOUSE_SECRET: rotated } });
    try {
      const c = await getWithToken(server.url('/conversation'), s.access);
      expect(c.status, `access token issued under "old": ${c.text}`).toBe(200);
      await refreshOk(server, s.refresh);
      const t = await login(ctxOf(server, db), s.user.username, s.user.password);
      const c2 = await getWithToken(server.url('/conversation'), t);
      expect(c2.status, c2.text).toBe(200);
      await expectNoUsableKeyAtRest(server, db, t);
    } finally {
      await server.stop();
    }
  });
});

describe('a database written before the fix (plaintext rows) is encrypted in place at the next start (sqlite)', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('keeps the legacy key id verifying and logging in, and leaves no plaintext "d" or refresh key in the database', async () => {
    const tmp = mkdtempSync(path.join(os.tmpdir(), 'gh_legacy_'));
    dirs.push(tmp);
    const file = path.join(tmp, 'gatehouse.db');
    writeLegacySqlite(file);
    const db: TestDatabase = {
      dialect: 'sqlite',
      url: `sqlite:${file}`,
      sqlitePath: file,
      drop: async () => {},
    };
    const server = await startServer({ databaseUrl: db.url });
    try {
      const jwks = await request(server.url('/.well-known/jwks.json'));
      expect(jwks.status).toBe(200);
      expect(
        (jwks.json.keys as { kid: string }[]).map((k) => k.kid),
        'the legacy key must still verify',
      ).toContain(LEGACY_KID);
      const t = await login(ctxOf(server, db), LEGACY_USER.username, LEGACY_USER.password);
      const rows = await readRows(db, 'signing_keys');
      const all = stringsOf(rows, ['public_jwk']);
      expect(
        all.some((v) => v.includes(LEGACY_PRIVATE_D)),
        'the legacy private key is still in clear',
      ).toBe(false);
      for (const v of all) expect(v).not.toMatch(/"d"\s*:/);
      let secrets: Row[] = [];
      try {
        secrets = await readRows(db, 'server_secrets');
      } catch {
        // table dropped: fine
      }
      expect(
        stringsOf(secrets).some((v) => v.includes(LEGACY_REFRESH_KEY)),
        'the legacy refresh derivation key is still in clear',
      ).toBe(false);
      await expectNoUsableKeyAtRest(server, db, t);
    } finally {
      await server.stop();
    }
  });
});

// keep the harness secret referenced: every server above that sets no GATEHOUSE_SECRET gets this one
void GATEHOUSE_SECRET;
