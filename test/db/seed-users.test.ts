import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { runSeedUsersCommand } from '../../src/commands/seed-users.ts';
import { loadConfig } from '../../src/config.ts';
import { createDb, type DbHandle } from '../../src/db/connect.ts';
import { migrateToLatest } from '../../src/db/migrate.ts';
import { createUsersRepository } from '../../src/db/users.ts';
import { usernameSkeleton } from '../../src/security/usernames.ts';
import { dialects } from '../support/dialects.ts';

// The seed command's own database (a file, or a PostgreSQL database of its own): it opens it from a URL.
async function createSeedDatabase(dialect: string) {
  const name = `gh_seed_${randomBytes(6).toString('hex')}`;
  if (dialect === 'sqlite') {
    const file = join(tmpdir(), `${name}.db`);
    return {
      url: `sqlite:${file}`,
      drop: async () => {
        for (const suffix of ['', '-wal', '-shm']) rmSync(file + suffix, { force: true });
      },
    };
  }
  const adminUrl = inject('postgresUrl');
  const admin = async (query: string) => {
    const client = new pg.Client({ connectionString: adminUrl });
    await client.connect();
    try {
      await client.query(query);
    } finally {
      await client.end();
    }
  };
  await admin(`create database ${name}`);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return { url: url.toString(), drop: () => admin(`drop database if exists ${name} with (force)`) };
}

describe.each(dialects)('seed-users on %s', (dialect) => {
  let target: { url: string; drop(): Promise<void> };
  let handle: DbHandle;

  beforeAll(async () => {
    target = await createSeedDatabase(dialect);
    const config = loadConfig({
      DATABASE_URL: target.url,
      GATEHOUSE_SECRET: randomBytes(32).toString('base64url'),
      ARGON2_MEMORY_KIB: '64',
      ARGON2_TIME_COST: '1',
    });
    handle = createDb(config.database);
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
