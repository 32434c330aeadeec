import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, describe, expect, it } from 'vitest';
import { runSeedUsersCommand } from '../../src/commands/seed-users.ts';
import { loadConfig } from '../../src/config.ts';
import { FAST_ARGON2 } from '../support/build-test-app.ts';

describe('seed-users against a database with real users', () => {
  const directory = mkdtempSync(join(tmpdir(), 'gatehouse-seed-'));
  const file = join(directory, 'gatehouse.db');
  const config = loadConfig({
    DATABASE_URL: `sqlite:${file}`,
    ARGON2_MEMORY_KIB: String(FAST_ARGON2.memoryKib),
    ARGON2_TIME_COST: String(FAST_ARGON2.timeCost),
  });
  afterAll(() => rmSync(directory, { recursive: true, force: true }));

  const seed = async (args: string[]) => {
    const printed: string[] = [];
    const warned: string[] = [];
    const code = await runSeedUsersCommand(
      config,
      args,
      (line) => printed.push(line),
      () => {},
      (line) => warned.push(line),
    );
    return { code, printed: printed.join('\n'), warned: warned.join('\n') };
  };
  const userCount = () => {
    const db = new DatabaseSync(file);
    try {
      return Number((db.prepare('select count(*) as n from users').get() as { n: number }).n);
    } finally {
      db.close();
    }
  };

  it('seeds an empty database, and seeds it again while it holds only seeded users', async () => {
    expect((await seed(['--count', '2'])).code).toBe(0);
    expect((await seed(['--count', '2'])).code).toBe(0);
    expect(userCount()).toBe(4);
  });

  it('refuses, saying why and how to override, once a real user exists, and adds nobody', async () => {
    const db = new DatabaseSync(file);
    db.exec(`insert into users (username, username_canonical, email, email_canonical, password_hash, age, level,
      created_at_ms, updated_at_ms) select 'alice', 'alice', 'alice@example.com', 'alice@example.com', password_hash,
      age, level, created_at_ms, updated_at_ms from users limit 1`);
    db.close();
    const refused = await seed(['--count', '2']);
    expect(refused.code).not.toBe(0);
    expect(refused.warned).toMatch(/1 user.*--allow-real-users/s);
    expect(refused.printed).toBe('');
    expect(userCount()).toBe(5);
  });

  it('seeds a database with real users when --allow-real-users is given', async () => {
    expect((await seed(['--count', '2', '--allow-real-users'])).code).toBe(0);
    expect(userCount()).toBe(7);
  });
});
