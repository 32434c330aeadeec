import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runSeedUsersCommand } from '../../src/commands/seed-users.ts';
import type { DbHandle } from '../../src/db/connect.ts';
import { migrateToLatest } from '../../src/db/migrate.ts';
import { createUsersRepository } from '../../src/db/users.ts';
import { usernameSkeleton } from '../../src/security/usernames.ts';
import { type CommandDatabase, createCommandDatabase } from '../support/command-database.ts';
import { dialects } from '../support/dialects.ts';

describe.each(dialects)('seed-users on %s', (dialect) => {
  let target: CommandDatabase;
  let handle: DbHandle;

  beforeAll(async () => {
    target = await createCommandDatabase(dialect, 'gh_seed');
    const { config } = target;
    handle = target.open();
    await migrateToLatest(handle);
    // A whole-Cyrillic lookalike of seed-2 registered before the run.
    const cyrillic = 'ѕееԁ-2';
    await createUsersRepository(handle.db).insertUserWithConversation(
      {
        username: cyrillic,
        usernameCanonical: cyrillic,
        usernameSkeleton: usernameSkeleton(cyrillic),
        email: 'lookalike@example.com',
        emailCanonical: 'lookalike@example.com',
        passwordHash: 'unused',
        age: 30,
        level: 'beginner',
      },
      'hello',
      new Date(),
    );
    const code = await runSeedUsersCommand(
      config,
      ['--count', '3', '--allow-real-users'],
      () => {},
      () => {},
      () => {},
    );
    expect(code).toBe(0);
  }, 60_000);
  afterAll(async () => {
    await handle?.close();
    await target?.drop();
  });

  it('gives seeded users their skeleton and skips a name whose lookalike is registered', async () => {
    const rows = await handle.db
      .selectFrom('users')
      .select(['username', 'username_skeleton'])
      .where('username', 'like', 'seed-%')
      .orderBy('id')
      .execute();
    // Numbering starts at the number of users (1); seed-2 looks like the registered name and is skipped.
    expect(rows).toEqual([
      { username: 'seed-1', username_skeleton: 'seed-1' },
      { username: 'seed-3', username_skeleton: 'seed-3' },
      { username: 'seed-4', username_skeleton: 'seed-4' },
    ]);
  });
});
