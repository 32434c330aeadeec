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
