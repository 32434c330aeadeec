import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createSigningKeysRepository } from '../../src/db/signing-keys.ts';
import { createSecretBox, generateSecret, isSealed, secretKeyId } from '../../src/security/secret-box.ts';
import { generateEd25519KeyPair } from '../../src/security/signing-keys.ts';
import { rotateSigningKey, sealSigningKeys } from '../../src/services/keys.ts';
import {
  buildTestApp,
  loginToken,
  registerUser,
  TEST_SECRET,
  type TestApp,
} from '../support/build-test-app.ts';
import { createTestClock } from '../support/clock.ts';
import { createTestDatabase, dialects, type TestDatabase } from '../support/dialects.ts';
import { decodeToken } from '../support/forge-token.ts';

describe.each(dialects)('secrets at rest on %s', (dialect) => {
  let database: TestDatabase;
  const apps: TestApp[] = [];
  const start = async (secrets: string[] = [TEST_SECRET]) => {
    const t = await buildTestApp(dialect, { database, env: { GATEHOUSE_SECRET: secrets.join(',') } });
    apps.push(t);
    return t;
  };
  const storedKeys = () => database.db.selectFrom('signing_keys').selectAll().execute();
  const read = (t: TestApp, token: string) =>
    t.app.inject({ method: 'GET', url: '/conversation', headers: { authorization: `Bearer ${token}` } });

  beforeEach(async () => {
    database = await createTestDatabase(dialect);
  });
  afterEach(async () => {
    for (const app of apps.splice(0)) await app.close();
    await database.destroy();
  });

  it('stores the private signing key only sealed with GATEHOUSE_SECRET', async () => {
    await start();
    const rows = await storedKeys();
    expect(rows).toHaveLength(1);
    for (const row of rows) {
      expect(isSealed(row.private_jwk)).toBe(true);
      expect(row.private_jwk).not.toMatch(/"d"/);
      expect(row.private_jwk.split(':')[1]).toBe(secretKeyId(TEST_SECRET));
    }
  });

  it('keeps no refresh-token derivation key in the database', async () => {
    const t = await start();
    await registerUser(t.app);
    await loginToken(t.app);
    const secrets = await database.db.selectFrom('server_secrets').select(['name', 'value']).execute();
    expect(secrets.filter((row) => !row.name.startsWith('first_signing_key_'))).toEqual([]);
  });

  it('refuses to start with a GATEHOUSE_SECRET that does not open the stored keys, and makes no key of its own', async () => {
    await start();
    await expect(start([generateSecret()])).rejects.toThrow(/cannot be decrypted.*GATEHOUSE_SECRET/s);
    expect(await storedKeys()).toHaveLength(1);
  });

  it('opens and then seals a private key stored in plain text before encryption', async () => {
    const legacy = await generateEd25519KeyPair();
    await createSigningKeysRepository(database.db).insertSigningKey(
      {
        kid: legacy.kid,
        algorithm: 'EdDSA',
        publicJwk: legacy.publicJwk as Record<string, unknown>,
        sealedPrivateJwk: JSON.stringify(legacy.privateJwk),
      },
      new Date('2026-11-25T11:00:00Z'),
    );
    const report = await sealSigningKeys(
      createSigningKeysRepository(database.db),
      createSecretBox([TEST_SECRET]),
      { reseal: false, now: new Date() },
    );
    expect(report).toEqual({ sealed: [legacy.kid], unreadable: [], planted: [] });
    const [row] = await storedKeys();
    expect(isSealed(row?.private_jwk ?? '')).toBe(true);
    expect(row?.private_jwk).not.toContain(String(legacy.privateJwk.d));

    const after = await start();
    await registerUser(after.app);
    expect(decodeToken(await loginToken(after.app)).header.kid).toBe(legacy.kid);
  });

  it('never seals or uses a key planted in plain text after the one-time sealing', async () => {
    const signingKeys = createSigningKeysRepository(database.db);
    const box = createSecretBox([TEST_SECRET]);
    await sealSigningKeys(signingKeys, box, { reseal: false, now: new Date() });
    await start();
    const planted = await generateEd25519KeyPair();
    await signingKeys.insertSigningKey(
      {
        kid: planted.kid,
        algorithm: 'EdDSA',
        publicJwk: planted.publicJwk as Record<string, unknown>,
        sealedPrivateJwk: JSON.stringify(planted.privateJwk),
      },
      new Date('2026-11-25T12:00:01Z'),
    );
    expect(await sealSigningKeys(signingKeys, box, { reseal: false, now: new Date() })).toEqual({
      sealed: [],
      unreadable: [],
      planted: [planted.kid],
    });
    await expect(start()).rejects.toThrow(/plain text/);
  });

  it('refuses a stored key whose public half was swapped for another', async () => {
    const t = await start();
    await registerUser(t.app);
    const other = await generateEd25519KeyPair();
    await database.db
      .updateTable('signing_keys')
      .set({ public_jwk: JSON.stringify(other.publicJwk) })
      .execute();
    await expect(start()).rejects.toThrow(/public key does not match/);
  });

  it('rotates GATEHOUSE_SECRET: "new,old" opens both, re-sealing moves every key to new, then new alone serves', async () => {
    const first = await start([TEST_SECRET]);
    await registerUser(first.app);
    const token = await loginToken(first.app);
    const newSecret = generateSecret();

    await start([newSecret, TEST_SECRET]);
    const report = await sealSigningKeys(
      createSigningKeysRepository(database.db),
      createSecretBox([newSecret, TEST_SECRET]),
      { reseal: true, now: new Date() },
    );
    expect(report.sealed).toHaveLength(1);
    for (const row of await storedKeys()) expect(row.private_jwk.split(':')[1]).toBe(secretKeyId(newSecret));

    const last = await start([newSecret]);
    expect((await read(last, token)).statusCode).toBe(200);
    await expect(start([TEST_SECRET])).rejects.toThrow(/cannot be decrypted/);
  });

  it('keeps serving when another instance adds a key under a secret this one lacks', async () => {
    const t = await start();
    await registerUser(t.app);
    const before = decodeToken(await loginToken(t.app)).header.kid;
    // The other instance runs mid-rotation ("new,old"): it opens the keys in use and seals with a secret this one lacks.
    await rotateSigningKey(
      createSigningKeysRepository(database.db),
      createTestClock(new Date(t.clock.now().getTime() + 1000)),
      createSecretBox([generateSecret(), TEST_SECRET]),
    );
    t.clock.advanceSeconds(5);
    const token = await loginToken(t.app);
    expect(decodeToken(token).header.kid).toBe(before);
    expect((await read(t, token)).statusCode).toBe(200);
    expect(t.logs.some((line) => line.includes('cannot be decrypted with this GATEHOUSE_SECRET'))).toBe(true);
    // Long after every token of the old key would have expired, it still signs: a key this instance cannot open
    // supersedes nothing here, so it is not retired from under the instance.
    t.clock.advanceSeconds(3 * 3600);
    const later = await loginToken(t.app);
    expect(decodeToken(later).header.kid).toBe(before);
    expect((await read(t, later)).statusCode).toBe(200);
  });
});
