import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { QueuedMail } from '../../src/db/email-outbox.ts';
import { createPasskeysRepository, type NewPasskey } from '../../src/db/passkeys.ts';
import { createUsersRepository } from '../../src/db/users.ts';
import { createTestClock } from '../support/clock.ts';
import { createTestDatabase, dialects, type TestDatabase } from '../support/dialects.ts';
import { newUser } from '../support/new-user.ts';

describe.each(dialects)('passkeys on %s', (dialect) => {
  let database: TestDatabase;
  const clock = createTestClock();
  beforeAll(async () => {
    database = await createTestDatabase(dialect);
  });
  afterAll(async () => {
    await database.destroy();
  });

  const userNamed = (name: string) =>
    createUsersRepository(database.db).insertUserWithConversation(newUser(name), 'welcome', clock.now());
  const passkeyOf = (userId: number, n: number | string): NewPasskey => ({
    id: `pk-${userId}-${n}`,
    userId,
    credentialId: `cred-${userId}-${n}`,
    publicKey: 'cose',
    signCount: 0,
    transports: ['internal', 'hybrid'],
    aaguid: '00000000-0000-0000-0000-000000000000',
    backupEligible: true,
    backupState: false,
    uvInitialized: true,
    name: `Passkey ${n}`,
  });
  const mail = (userId: number): QueuedMail => ({
    userId,
    recipient: 'someone@example.com',
    template: 'mfa_changed',
    sealedPayload: 'sealed',
  });
  const outboxCount = async () =>
    Number(
      (
        await database.db
          .selectFrom('email_outbox')
          .select((eb) => eb.fn.countAll<number | string>().as('n'))
          .executeTakeFirstOrThrow()
      ).n,
    );

  it('stores a user handle once and keeps it', async () => {
    const passkeys = createPasskeysRepository(database.db);
    const user = await userNamed('handle');
    expect(await passkeys.findUserHandle(user.id)).toBeUndefined();
    expect(await passkeys.ensureUserHandle(user.id, 'first')).toBe('first');
    expect(await passkeys.ensureUserHandle(user.id, 'second')).toBe('first');
    expect(await passkeys.ensureUserHandle(999_999, 'x')).toBeUndefined();
  });

  it('spends a challenge once, only for its purpose and user, and not after it expired', async () => {
    const passkeys = createPasskeysRepository(database.db);
    const user = await userNamed('challenges');
    const other = await userNamed('challenges2');
    const expiresAt = new Date(clock.now().getTime() + 300_000);
    await passkeys.insertChallenge(
      { id: 'c1', purpose: 'registration', userId: user.id, challenge: 'v1', expiresAt },
      clock.now(),
    );
    expect(await passkeys.consumeChallenge('c1', 'second_factor', user.id, clock.now())).toBeUndefined();
    expect(await passkeys.consumeChallenge('c1', 'registration', other.id, clock.now())).toBeUndefined();
    expect(await passkeys.consumeChallenge('c1', 'registration', undefined, clock.now())).toBeUndefined();
    const spends = await Promise.all(
      Array.from({ length: 10 }, () => passkeys.consumeChallenge('c1', 'registration', user.id, clock.now())),
    );
    expect(spends.filter((value) => value === 'v1')).toHaveLength(1);

    await passkeys.insertChallenge(
      { id: 'c2', purpose: 'passwordless', userId: undefined, challenge: 'v2', expiresAt },
      clock.now(),
    );
    expect(await passkeys.consumeChallenge('c2', 'passwordless', user.id, clock.now())).toBeUndefined();
    const late = new Date(expiresAt.getTime());
    expect(await passkeys.consumeChallenge('c2', 'passwordless', undefined, late)).toBeUndefined();
    expect(
      await passkeys.consumeChallenge('c2', 'passwordless', undefined, new Date(late.getTime() - 1)),
    ).toBe('v2');
  });

  it('caps passkeys per user even when 15 registrations race, and refuses a credential id twice', async () => {
    const passkeys = createPasskeysRepository(database.db);
    const user = await userNamed('cap');
    const before = await outboxCount();
    const results = await Promise.all(
      Array.from({ length: 15 }, (_, n) =>
        passkeys.insertPasskey(passkeyOf(user.id, n), 10, [mail(user.id)], clock.now()),
      ),
    );
    expect(results.filter((result) => result === 'inserted')).toHaveLength(10);
    expect(results.filter((result) => result === 'limit')).toHaveLength(5);
    expect(await passkeys.countPasskeys(user.id)).toBe(10);
    expect(await outboxCount()).toBe(before + 10);

    // One that won the race: which ten win is up to the database.
    const winner = results.indexOf('inserted');
    const other = await userNamed('cap2');
    const taken = { ...passkeyOf(other.id, 'x'), credentialId: `cred-${user.id}-${winner}` };
    expect(await passkeys.insertPasskey(taken, 10, [mail(other.id)], clock.now())).toBe('duplicate');
    expect(await outboxCount()).toBe(before + 10);
  });

  // Found from outside: a registration whose account was deleted meanwhile answered 409 passkey_limit.
  it('tells a user deleted meanwhile from a full account, and writes nothing', async () => {
    const passkeys = createPasskeysRepository(database.db);
    const user = await userNamed('gone-meanwhile');
    await database.db.deleteFrom('users').where('id', '=', user.id).execute();
    expect(await passkeys.insertPasskey(passkeyOf(user.id, 1), 10, [mail(user.id)], clock.now())).toBe(
      'user_gone',
    );
    const rows = await database.db
      .selectFrom('webauthn_credentials')
      .select('id')
      .where('user_id', '=', user.id)
      .execute();
    expect(rows).toEqual([]);
  });

  it('lists, renames and deletes only the owner’s passkeys', async () => {
    const passkeys = createPasskeysRepository(database.db);
    const owner = await userNamed('owner');
    const stranger = await userNamed('stranger');
    await passkeys.insertPasskey(passkeyOf(owner.id, 1), 10, [], clock.now());
    const [stored] = await passkeys.listPasskeys(owner.id);
    expect(stored).toMatchObject({
      credentialId: `cred-${owner.id}-1`,
      transports: ['internal', 'hybrid'],
      backupEligible: true,
      backupState: false,
      suspect: false,
      lastUsedAt: undefined,
    });
    const id = stored?.id ?? '';
    expect(await passkeys.renamePasskey(stranger.id, id, 'mine')).toBeUndefined();
    expect((await passkeys.renamePasskey(owner.id, id, 'Laptop'))?.name).toBe('Laptop');
    expect(await passkeys.deletePasskey(stranger.id, id, [], clock.now())).toBe(false);
    expect(await passkeys.deletePasskey(owner.id, id, [], clock.now())).toBe(true);
    expect(await passkeys.findByCredentialId(`cred-${owner.id}-1`)).toBeUndefined();
  });

  it('records a use only against the counter it was checked with, and never for a suspect passkey', async () => {
    const passkeys = createPasskeysRepository(database.db);
    const user = await userNamed('counter');
    await passkeys.insertPasskey({ ...passkeyOf(user.id, 1), signCount: 4 }, 10, [], clock.now());
    const id = `pk-${user.id}-1`;
    const use = { id, storedCount: 4, newCount: 5, backupState: true, userVerified: true };
    const results = await Promise.all([
      passkeys.recordUse(use, clock.now()),
      passkeys.recordUse(use, clock.now()),
    ]);
    expect(results.filter(Boolean)).toHaveLength(1);
    const used = await passkeys.findPasskey(user.id, id);
    expect(used).toMatchObject({ signCount: 5, backupState: true });
    expect(used?.lastUsedAt).toBeInstanceOf(Date);

    const before = await outboxCount();
    expect(await passkeys.markSuspect(id, [mail(user.id)], clock.now())).toBe(true);
    expect(await passkeys.markSuspect(id, [mail(user.id)], clock.now())).toBe(false);
    expect(await outboxCount()).toBe(before + 1);
    expect(await passkeys.recordUse({ ...use, storedCount: 5, newCount: 6 }, clock.now())).toBe(false);
    expect((await passkeys.findPasskey(user.id, id))?.suspect).toBe(true);
    // A suspect passkey still counts toward the cap and the default names, not as a second factor.
    await passkeys.insertPasskey(passkeyOf(user.id, 2), 10, [], clock.now());
    expect(await passkeys.countPasskeys(user.id)).toBe(2);
    expect(await passkeys.countUsablePasskeys(user.id)).toBe(1);
  });

  it('removes every passkey and challenge of a user, and mails only when one went', async () => {
    const passkeys = createPasskeysRepository(database.db);
    const user = await userNamed('removeall');
    const before = await outboxCount();
    expect(await passkeys.deleteAllPasskeys(user.id, [mail(user.id)], clock.now())).toBe(0);
    expect(await outboxCount()).toBe(before);
    await passkeys.insertPasskey(passkeyOf(user.id, 1), 10, [], clock.now());
    await passkeys.insertPasskey(passkeyOf(user.id, 2), 10, [], clock.now());
    expect(await passkeys.deleteAllPasskeys(user.id, [mail(user.id)], clock.now())).toBe(2);
    expect(await outboxCount()).toBe(before + 1);
    expect(await passkeys.countPasskeys(user.id)).toBe(0);
  });
});
