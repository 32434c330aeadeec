import type { Config } from '../config.ts';
import { createBulkUsersRepository } from '../db/bulk-users.ts';
import { createDb } from '../db/connect.ts';
import { migrateToLatest } from '../db/migrate.ts';
import type { NewUserRow } from '../db/schema.ts';
import { createPasswordHasher } from '../security/passwords.ts';
import { usernameSkeleton } from '../security/usernames.ts';
import { WELCOME_MESSAGE } from '../services/accounts.ts';

export const SEEDED_PASSWORD = 'seeded user password 0001';
const BATCH = 2000;

const SEED_EMAIL_DOMAIN = 'seed.example';

/**
 * `npm run seed-users -- --count N [--allow-real-users]`: fills the database with N users (seed-<n>, password
 * SEEDED_PASSWORD) for load tests, sharing one precomputed hash; refuses a database that holds users it did not
 * create unless told otherwise; returns the process exit code.
 */
export async function runSeedUsersCommand(
  config: Config,
  args: string[],
  print: (line: string) => void,
  progress: (line: string) => void,
  warn: (line: string) => void,
): Promise<number> {
  const countIndex = args.indexOf('--count');
  const count = countIndex >= 0 ? Number(args[countIndex + 1]) : Number.NaN;
  if (!Number.isInteger(count) || count < 1 || count > 100_000_000) {
    warn('usage: npm run seed-users -- --count N [--allow-real-users]');
    return 2;
  }
  const handle = createDb(config.database);
  try {
    await migrateToLatest(handle);
    const bulk = createBulkUsersRepository(handle.db);
    // Seeded users share a published password; the benchmark logs in as them, so the password stays, and a
    // database with real users (production, by mistake) is refused instead of being given such accounts.
    const realUsers = await bulk.countUsersOutsideEmailDomain(SEED_EMAIL_DOMAIN);
    if (realUsers > 0 && !args.includes('--allow-real-users')) {
      warn(
        `refusing to seed: the database holds ${realUsers} user(s) that seed-users did not create, and seeded ` +
          `users all share the published password "${SEEDED_PASSWORD}". Seed a benchmark database, or pass ` +
          '--allow-real-users to add them anyway.',
      );
      return 1;
    }
    const passwordHash = await createPasswordHasher(config.passwords.argon2).hash(SEEDED_PASSWORD);
    // Names continue from the number of users; a name already taken (a registration, an earlier or concurrent run)
    // is skipped and the next one tried, until `count` users were added.
    let next = await bulk.countUsers();
    const started = performance.now();
    let shownAt = 0;
    let finished = 0;
    while (finished < count) {
      const now = new Date();
      const rows: NewUserRow[] = [];
      const size = Math.min(BATCH, count - finished);
      for (let i = 0; i < size; i += 1, next += 1) {
        const name = `seed-${next.toString(36)}`;
        rows.push({
          username: name,
          username_canonical: name,
          username_skeleton: usernameSkeleton(name),
          email: `${name}@${SEED_EMAIL_DOMAIN}`,
          email_canonical: `${name}@${SEED_EMAIL_DOMAIN}`,
          password_hash: passwordHash,
          age: 20 + (next % 60),
          level: 'beginner',
          created_at_ms: now.getTime(),
          updated_at_ms: now.getTime(),
        });
      }
      finished += await bulk.insertUsersWithConversations(rows, WELCOME_MESSAGE, now);
      if (finished < count && performance.now() - shownAt < 250) continue;
      shownAt = performance.now();
      const share = finished / count;
      const bar = '#'.repeat(Math.round(share * 30)).padEnd(30, '.');
      const elapsed = (performance.now() - started) / 1000;
      progress(
        `\r[${bar}] ${(share * 100).toFixed(0).padStart(3)}% ${finished}/${count} users, ${elapsed.toFixed(1)} s`,
      );
    }
    progress('\n');
    const seconds = (performance.now() - started) / 1000;
    print(
      `seeded ${count} users in ${seconds.toFixed(1)} s (${Math.round(count / seconds)} users/s); password: ${SEEDED_PASSWORD}`,
    );
    return 0;
  } finally {
    await handle.close();
  }
}
