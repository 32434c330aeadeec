import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKnownIpsRepository } from '../../src/db/known-ips.ts';
import { createUsersRepository } from '../../src/db/users.ts';
import { createTestDatabase, dialects, type TestDatabase } from '../support/dialects.ts';
import { newUser } from '../support/new-user.ts';

const DAY_MS = 86400_000;
const at = (day: number) => new Date(Date.UTC(2026, 11, 1) + day * DAY_MS);
const LONG_AGO = new Date(0);

describe.each(dialects)('known IPs on %s', (dialect) => {
  let database: TestDatabase;
  beforeAll(async () => {
    database = await createTestDatabase(dialect);
  });
  afterAll(async () => {
    await database.destroy();
  });

  const addUser = (name: string) =>
    createUsersRepository(database.db).insertUserWithConversation(newUser(name), 'hi', at(0));
  const storedIps = async (userId: number) =>
    (
      await database.db
        .selectFrom('known_ips')
        .select('ip')
        .where('user_id', '=', userId)
        .orderBy('ip')
        .execute()
    ).map((row) => row.ip);

  it('names the user of a canonical username, with no known address at first, and nobody for an unknown name', async () => {
    const repository = createKnownIpsRepository(database.db);
    const user = await addUser('Erin');
    expect(await repository.findLoginSubject('erin', '203.0.113.1', LONG_AGO)).toEqual({
      userId: user.id,
      trustGeneration: 0,
      ipLastSuccessAt: undefined,
    });
    expect(await repository.findLoginSubject('nobody', '203.0.113.1', LONG_AGO)).toBeUndefined();
  });

  it('remembers the last success per address, the same address once, and only within the remembered time', async () => {
    const repository = createKnownIpsRepository(database.db);
    const user = await addUser('Frank');
    await repository.recordKnownIp(user.id, '2001:db8:1:2::/64', at(1), 10, LONG_AGO);
    await repository.recordKnownIp(user.id, '2001:db8:1:2::/64', at(3), 10, LONG_AGO);
    expect(await repository.findLoginSubject('frank', '2001:db8:1:2::/64', LONG_AGO)).toEqual({
      userId: user.id,
      trustGeneration: 0,
      ipLastSuccessAt: at(3),
    });
    expect(await storedIps(user.id)).toEqual(['2001:db8:1:2::/64']);
    expect(await repository.findLoginSubject('frank', '2001:db8:1:2::/64', at(4))).toEqual({
      userId: user.id,
      trustGeneration: 0,
      ipLastSuccessAt: undefined,
    });
    expect(await repository.findLoginSubject('frank', '203.0.113.1', LONG_AGO)).toMatchObject({
      ipLastSuccessAt: undefined,
    });
  });

  it('keeps the most recent addresses of each user and forgets those past the remembered time', async () => {
    const repository = createKnownIpsRepository(database.db);
    const user = await addUser('Grace');
    const other = await addUser('Heidi');
    await repository.recordKnownIp(other.id, '192.0.2.99', at(0), 3, LONG_AGO);
    for (let day = 1; day <= 5; day += 1) {
      await repository.recordKnownIp(user.id, `192.0.2.${day}`, at(day), 3, LONG_AGO);
    }
    expect(await storedIps(user.id)).toEqual(['192.0.2.3', '192.0.2.4', '192.0.2.5']);
    await repository.recordKnownIp(user.id, '192.0.2.6', at(100), 3, at(10));
    expect(await storedIps(user.id)).toEqual(['192.0.2.6']);
    expect(await storedIps(other.id)).toEqual(['192.0.2.99']);
  });

  it('records nothing, and fails nothing, for a user deleted meanwhile; deleting a user deletes their addresses', async () => {
    const repository = createKnownIpsRepository(database.db);
    await expect(
      repository.recordKnownIp(987_654, '192.0.2.1', at(1), 10, LONG_AGO),
    ).resolves.toBeUndefined();
    expect(await storedIps(987_654)).toEqual([]);
    const user = await addUser('Ivan');
    await repository.recordKnownIp(user.id, '192.0.2.1', at(1), 10, LONG_AGO);
    await database.db.deleteFrom('users').where('id', '=', user.id).execute();
    expect(await storedIps(user.id)).toEqual([]);
  });

  it('forgets the known addresses of a user and raises their trust generation, touching no one else', async () => {
    const repository = createKnownIpsRepository(database.db);
    const users = createUsersRepository(database.db);
    const user = await addUser('Quentin');
    const other = await addUser('Rupert');
    await repository.recordKnownIp(user.id, '192.0.2.10', at(1), 10, LONG_AGO);
    await repository.recordKnownIp(other.id, '192.0.2.11', at(1), 10, LONG_AGO);
    await users.forgetTrustedClients(user.id);
    expect(await storedIps(user.id)).toEqual([]);
    expect(await repository.findLoginSubject('quentin', '192.0.2.10', LONG_AGO)).toEqual({
      userId: user.id,
      trustGeneration: 1,
      ipLastSuccessAt: undefined,
    });
    expect(await storedIps(other.id)).toEqual(['192.0.2.11']);
    expect((await repository.findLoginSubject('rupert', '192.0.2.11', LONG_AGO))?.trustGeneration).toBe(0);
  });
});
