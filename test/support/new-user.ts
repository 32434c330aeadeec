import type { Db } from '../../src/db/schema.ts';
import type { NewUser } from '../../src/db/users.ts';

/** A user row as a repository inserts it, with a placeholder hash: for repository tests, which hash nothing. */
export const newUser = (name: string, overrides: Partial<NewUser> = {}): NewUser => ({
  username: name,
  usernameCanonical: name.toLowerCase(),
  usernameSkeleton: name.toLowerCase(),
  email: `${name}@example.com`,
  emailCanonical: `${name.toLowerCase()}@example.com`,
  passwordHash: '$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaA',
  age: 30,
  level: 'beginner',
  ...overrides,
});

/**
 * Writes a live session row as an earlier version did, without its scope (which then reads as the default): for tests
 * that need a session of the user without a login.
 */
export async function insertLiveSession(db: Db, id: string, userId: number, nowMs: number): Promise<void> {
  await db
    .insertInto('sessions')
    .values({
      id,
      user_id: userId,
      created_at_ms: nowMs,
      last_used_at_ms: nowMs,
      expires_at_ms: nowMs + 3600_000,
      revoked_at_ms: null,
      revoked_reason: null,
      user_agent: null,
      ip_address: null,
    })
    .execute();
}
