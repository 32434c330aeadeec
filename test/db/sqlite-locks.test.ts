import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDb, type DbHandle } from '../../src/db/connect.ts';
import { migrateToLatest } from '../../src/db/migrate.ts';
import { createUsersRepository } from '../../src/db/users.ts';
import { AppError } from '../../src/errors.ts';

// Another process on the same file is played by a second connection that takes the write lock and keeps it.
describe('a SQLite file whose write lock another connection holds', () => {
  let directory: string;
  let file: string;
  let handle: DbHandle;
  beforeAll(async () => {
    directory = mkdtempSync(path.join(os.tmpdir(), 'gh_locks_'));
    file = path.join(directory, 'gatehouse.db');
    handle = createDb({ kind: 'sqlite', path: file });
    await migrateToLatest(handle);
  });
  afterAll(async () => {
    await handle.close();
    rmSync(directory, { recursive: true, force: true });
  });

  let counter = 0;
  const insertUser = () => {
    counter += 1;
    const name = `locked${counter}`;
    return createUsersRepository(handle.db).insertUserWithConversation(
      {
        username: name,
        usernameCanonical: name,
        usernameSkeleton: name,
        email: `${name}@example.com`,
        emailCanonical: `${name}@example.com`,
        passwordHash: '$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA',
        age: 30,
        level: 'beginner',
      },
      'welcome',
      new Date(),
    );
  };
  const count = (table: 'users' | 'messages') => {
    const reader = new DatabaseSync(file, { readOnly: true });
    try {
      return Number(Object.values(reader.prepare(`select count(*) from ${table}`).get() ?? {})[0]);
    } finally {
      reader.close();
    }
  };

  it('waits for the lock on timers, leaving the event loop free, then writes', async () => {
    const other = new DatabaseSync(file);
    other.exec('BEGIN IMMEDIATE');
    let ticks = 0;
    const ticker = setInterval(() => {
      ticks += 1;
    }, 10);
    const inserting = insertUser();
    await sleep(300);
    const ticksWhileLocked = ticks;
    other.exec('COMMIT');
    other.close();
    const user = await inserting;
    clearInterval(ticker);
    // A wait inside the call would have frozen the timer for all 300 ms.
    expect(ticksWhileLocked).toBeGreaterThan(10);
    expect(user.username).toBe(`locked${counter}`);
    expect(count('users')).toBe(1);
  });

  it('answers service_unavailable once the lock outlasts the wait budget, and writes nothing', async () => {
    const usersBefore = count('users');
    const other = new DatabaseSync(file);
    other.exec('BEGIN IMMEDIATE');
    try {
      const error = await insertUser().catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(AppError);
      expect((error as AppError).code).toBe('service_unavailable');
    } finally {
      other.exec('COMMIT');
      other.close();
    }
    expect(count('users')).toBe(usersBefore);
    expect(count('messages')).toBe(usersBefore);
    // The connection is usable again: the failed transaction left nothing open.
    await insertUser();
    expect(count('users')).toBe(usersBefore + 1);
  }, 20_000);
});
