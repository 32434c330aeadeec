import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSigningKeysRepository } from '../../src/db/signing-keys.ts';
import { createSecretBox } from '../../src/security/secret-box.ts';
import { listSigningKeys, rotateSigningKey } from '../../src/services/keys.ts';
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

const testBox = createSecretBox([TEST_SECRET]);

describe.each(dialects)('signing key rotation on %s', (dialect) => {
  let database: TestDatabase;
  const apps: TestApp[] = [];
  const start = async () => {
    const app = await buildTestApp(dialect, { database });
    apps.push(app);
    return app;
  };
  beforeAll(async () => {
    database = await createTestDatabase(dialect);
  });
  afterAll(async () => {
    for (const app of apps) await app.close();
    await database.destroy();
  });

  const read = (t: TestApp, token: string) =>
    t.app.inject({ method: 'GET', url: '/conversation', headers: { authorization: `Bearer ${token}` } });

  it('signs with the new key after a rotation while tokens of the old key stay valid, then refuses them once retired', async () => {
    const first = await start();
    await registerUser(first.app, { username: 'alice', email: 'alice@example.com' });
    const oldToken = await loginToken(first.app);
    const oldKid = decodeToken(oldToken).header.kid as string;

    const signingKeys = createSigningKeysRepository(database.db);
    const newKid = await rotateSigningKey(
      signingKeys,
      createTestClock(new Date(first.clock.now().getTime() + 60_000)),
      testBox,
    );
    expect(newKid).not.toBe(oldKid);

    // From then on: the running instance re-reads its keys before signing (at most a second old) ...
    first.clock.advanceSeconds(61);
    expect(decodeToken(await loginToken(first.app)).header.kid).toBe(newKid);
    // ... and an instance started now signs with the new key too, while the old key's tokens stay valid.
    const second = await buildTestApp(dialect, { database, clock: createTestClock(first.clock.now()) });
    apps.push(second);
    const newToken = await loginToken(second.app);
    expect(decodeToken(newToken).header.kid).toBe(newKid);
    expect((await read(second, oldToken)).statusCode).toBe(200);
    expect((await read(second, newToken)).statusCode).toBe(200);
    expect((await read(first, newToken)).statusCode).toBe(200);

    const jwks = (await second.app.inject({ method: 'GET', url: '/.well-known/jwks.json' })).json();
    expect(jwks.keys.map((key: { kid: string }) => key.kid).sort()).toEqual([oldKid, newKid].sort());

    const states = await listSigningKeys(signingKeys);
    expect(states.find((key) => key.kid === newKid)?.state).toBe('signing');
    expect(states.find((key) => key.kid === oldKid)?.state).toBe('verifying');

    expect(await signingKeys.retireSigningKey(oldKid, second.clock.now())).toBe(true);
    const third = await buildTestApp(dialect, { database, clock: second.clock });
    apps.push(third);
    expect((await read(third, oldToken)).statusCode).toBe(401);
    expect((await read(third, newToken)).statusCode).toBe(200);
    const after = (await third.app.inject({ method: 'GET', url: '/.well-known/jwks.json' })).json();
    expect(after.keys.map((key: { kid: string }) => key.kid)).toEqual([newKid]);
  });

  it('lets two instances that start together on an empty database accept each other’s tokens', async () => {
    const fresh = await createTestDatabase(dialect);
    try {
      const [a, b] = await Promise.all([
        buildTestApp(dialect, { database: fresh }),
        buildTestApp(dialect, { database: fresh }),
      ]);
      apps.push(a, b);
      await registerUser(a.app, { username: 'twin', email: 'twin@example.com' });
      const fromA = await loginToken(a.app, 'twin');
      const fromB = await loginToken(b.app, 'twin');
      for (const t of [a, b]) {
        expect((await read(t, fromA)).statusCode).toBe(200);
        expect((await read(t, fromB)).statusCode).toBe(200);
      }
      await a.app.close();
      await b.app.close();
    } finally {
      await fresh.destroy();
    }
  });

  it('retires a superseded key on its own once every token it signed has expired', async () => {
    const signingKeys = createSigningKeysRepository(database.db);
    const current = await start();
    const supersededKid = (await listSigningKeys(signingKeys)).find((key) => key.state === 'signing')
      ?.kid as string;
    const rotatedAt = current.clock.now().getTime() + 3600_000;
    await rotateSigningKey(signingKeys, createTestClock(new Date(rotatedAt)), testBox);

    // It signed until its successor was created; its tokens live on for their lifetime after that.
    const handedOver = rotatedAt;
    const soon = createTestClock(new Date(handedOver + 900 * 1000));
    apps.push(await buildTestApp(dialect, { database, clock: soon }));
    expect((await listSigningKeys(signingKeys)).find((key) => key.kid === supersededKid)?.state).toBe(
      'verifying',
    );

    // Token lifetime, two reload intervals for instances still signing with it, and a minute of margin.
    const later = createTestClock(new Date(handedOver + (900 + 2 * 30 + 60 + 1) * 1000));
    apps.push(await buildTestApp(dialect, { database, clock: later }));
    expect((await listSigningKeys(signingKeys)).find((key) => key.kid === supersededKid)?.state).toBe(
      'retired',
    );
  });
});

describe.each(dialects)('signing key lookups on %s', (dialect) => {
  it('accepts a token from a key another instance just created, and refuses a made-up kid', async () => {
    const database = await createTestDatabase(dialect);
    const a = await buildTestApp(dialect, { database });
    const b = await buildTestApp(dialect, { database });
    try {
      await registerUser(a.app, { username: 'lookup', email: 'lookup@example.com' });
      await rotateSigningKey(
        createSigningKeysRepository(database.db),
        createTestClock(new Date(a.clock.now().getTime() + 1000)),
        testBox,
      );
      a.clock.advanceSeconds(2);
      const fromNewKey = await loginToken(a.app, 'lookup');
      b.clock.advanceSeconds(2);
      const response = await b.app.inject({
        method: 'GET',
        url: '/conversation',
        headers: { authorization: `Bearer ${fromNewKey}` },
      });
      expect(response.statusCode).toBe(200);
    } finally {
      await a.app.close();
      await b.app.close();
      await database.destroy();
    }
  });
});
