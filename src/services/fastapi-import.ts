import type { FastapiSeedUser, SeedValue } from '../db/fastapi-seed.ts';
import type { ImportedUser, ImportedUsersRepository } from '../db/imported-users.ts';
import { MAX_USER_ID, type NewUser } from '../db/users.ts';
import type { Clock } from '../security/clock.ts';
import { findBcryptHashProblem } from '../security/passwords.ts';
import { checkAccountFields, WELCOME_MESSAGE } from './accounts.ts';

// Half of Gatehouse's ids: a kept id near the top left new accounts none (a seed row with id 2147483647 made every
// registration after the import fail on PostgreSQL, and on SQLite gave ids past what the admin API reaches).
export const MAX_KEPT_SEED_ID = Math.floor(MAX_USER_ID / 2);

/** Why a row of the seed was not imported. */
export type SkipCode =
  | 'invalid_username'
  | 'invalid_email'
  | 'invalid_password_hash'
  | 'invalid_age'
  | 'invalid_level'
  | 'duplicate_username'
  | 'duplicate_email'
  | 'username_taken'
  | 'lookalike_username'
  | 'email_taken'
  | 'concurrent_change';

export interface SkippedRow {
  sourceId: bigint;
  /** The username as the seed stored it (null when it has none, or it is not text). */
  username: string | null;
  code: SkipCode;
  reason: string;
}

export interface PlacedUser {
  sourceId: bigint;
  id: number;
  username: string;
}

export interface RenumberedUser extends PlacedUser {
  reason: string;
}

export interface FastapiImportSummary {
  read: number;
  imported: number;
  alreadyPresent: PlacedUser[];
  skipped: SkippedRow[];
  /** Imported users that could not keep their id. */
  renumbered: RenumberedUser[];
}

export interface FastapiSeedSource {
  count: number;
  maxIdUpTo(limit: number): number | undefined;
  users(): Iterable<FastapiSeedUser>;
}

export interface FastapiImportDependencies {
  importedUsers: ImportedUsersRepository;
  clock: Clock;
  /** Called after each batch with the rows handled so far. */
  onProgress?: (done: number, total: number) => void;
}

// Ids are PostgreSQL integers (and JavaScript numbers): an id past this gets a new one.
const BATCH = 500;
// A row that lost a race with a registration is judged again against what is there now; more than this many
// losses in a row means something keeps changing the users, and the row is left for a later run.
const ATTEMPTS = 3;

// What registration's rules judge, each with the seed's column that holds it and the code of its refusal.
const FIELD_SKIPS = {
  username: 'invalid_username',
  email: 'invalid_email',
  age: 'invalid_age',
  level: 'invalid_level',
} as const satisfies Record<string, SkipCode>;

interface Candidate {
  sourceId: bigint;
  /** The seed's id when it fits Gatehouse's ids, kept or not: the user an earlier run imported may hold it. */
  seedId: number | undefined;
  /** The seed's id when Gatehouse can keep it, or why not. */
  keepId: number | undefined;
  idProblem: string | undefined;
  user: NewUser;
  attempts: number;
}

type Checked = { candidate: Candidate } | { skip: SkippedRow };

/**
 * Imports the users of the FastAPI seed's database: each row that meets registration's rules (username, email, age,
 * level) and holds a bcrypt hash becomes a user with the same hash (upgraded to argon2id at their next login) and
 * their conversation. Ids are kept where free; names or emails already taken, lookalike names and duplicates within
 * the file are reported and skipped. A user imported before (same name, and same id or email) is reported as already
 * present, so running it again imports only what is new.
 */
export async function importFastapiUsers(
  source: FastapiSeedSource,
  deps: FastapiImportDependencies,
): Promise<FastapiImportSummary> {
  const { importedUsers, clock } = deps;
  const summary: FastapiImportSummary = {
    read: 0,
    imported: 0,
    alreadyPresent: [],
    skipped: [],
    renumbered: [],
  };
  // Names, lookalikes and emails of the rows imported or already present, so that a later row of the file that
  // repeats one (the seed's uniqueness is case-sensitive) is reported as the duplicate it is.
  const seenNames = new Map<string, bigint>();
  const seenSkeletons = new Map<string, { sourceId: bigint; username: string }>();
  const seenEmails = new Map<string, bigint>();

  // Before any insert: a user created from now on (a renumbered import, a registration meanwhile) gets an id past
  // every id of the file, and takes none that a later row is about to keep. An id Gatehouse ever used is never kept:
  // the audit events of a deleted user outlive them, and would show as the newcomer's.
  const usedThrough = await importedUsers.reserveUserIdsThrough(source.maxIdUpTo(MAX_KEPT_SEED_ID) ?? 0);

  const skip = (seed: FastapiSeedUser, code: SkipCode, reason: string): Checked => ({
    skip: {
      sourceId: seed.id,
      username: typeof seed.username === 'string' ? seed.username : null,
      code,
      reason,
    },
  });

  const check = (seed: FastapiSeedUser): Checked => {
    const text = (value: SeedValue) => (typeof value === 'string' ? value : '');
    const fields = checkAccountFields({
      username: text(seed.username),
      email: text(seed.email),
      age: typeof seed.age === 'bigint' || typeof seed.age === 'number' ? Number(seed.age) : Number.NaN,
      level: text(seed.level),
    });
    if ('problems' in fields) {
      const [problem] = fields.problems;
      const field = problem?.loc[1] as keyof typeof FIELD_SKIPS;
      return skip(seed, FIELD_SKIPS[field], `${problem?.msg} (the seed has ${show(seed[field])})`);
    }
    const passwordHash = typeof seed.hashedPassword === 'string' ? seed.hashedPassword : '';
    const hashProblem = findBcryptHashProblem(passwordHash);
    if (hashProblem) {
      return skip(
        seed,
        'invalid_password_hash',
        `the password hash is refused (${hashProblem}): nobody could log in`,
      );
    }
    const { account } = fields;
    const sameName = seenNames.get(account.usernameCanonical);
    if (sameName !== undefined) {
      return skip(seed, 'duplicate_username', `the same username as source id ${sameName}, imported instead`);
    }
    const lookalike = seenSkeletons.get(account.usernameSkeleton);
    if (lookalike) {
      return skip(
        seed,
        'duplicate_username',
        `looks like "${lookalike.username}" (source id ${lookalike.sourceId}), imported instead`,
      );
    }
    const sameEmail = seenEmails.get(account.emailCanonical);
    if (sameEmail !== undefined) {
      return skip(seed, 'duplicate_email', `the same email as source id ${sameEmail}, imported instead`);
    }
    const seedId = seed.id >= 1n && seed.id <= BigInt(MAX_KEPT_SEED_ID) ? Number(seed.id) : undefined;
    const keepId = seedId !== undefined && seedId > usedThrough ? seedId : undefined;
    return {
      candidate: {
        sourceId: seed.id,
        seedId,
        keepId,
        idProblem:
          seedId === undefined
            ? `id ${seed.id} is outside the ids an import keeps (1 to ${MAX_KEPT_SEED_ID})`
            : keepId === undefined
              ? `id ${seedId} was used in Gatehouse before (ids up to ${usedThrough} were), and ids are never reused`
              : undefined,
        attempts: 0,
        user: { ...account, passwordHash },
      },
    };
  };

  const remember = (candidate: Candidate) => {
    seenNames.set(candidate.user.usernameCanonical, candidate.sourceId);
    seenSkeletons.set(candidate.user.usernameSkeleton, {
      sourceId: candidate.sourceId,
      username: candidate.user.username,
    });
    seenEmails.set(candidate.user.emailCanonical, candidate.sourceId);
  };

  /** Judges the candidates against Gatehouse's users, inserts those that may come in, and returns those that lost a race. */
  const place = async (candidates: Candidate[], now: Date): Promise<Candidate[]> => {
    const clashing = await importedUsers.findClashingUsers({
      // The ids too that cannot be kept: the user holding one is named in the report.
      ids: candidates.flatMap((candidate) => (candidate.seedId === undefined ? [] : [candidate.seedId])),
      usernameCanonicals: candidates.map((candidate) => candidate.user.usernameCanonical),
      usernameSkeletons: candidates.map((candidate) => candidate.user.usernameSkeleton),
      emailCanonicals: candidates.map((candidate) => candidate.user.emailCanonical),
    });
    const byId = new Map(clashing.map((user) => [user.id, user]));
    const byName = new Map(clashing.map((user) => [user.usernameCanonical, user]));
    const bySkeleton = new Map(clashing.map((user) => [user.usernameSkeleton, user]));
    const byEmail = new Map(clashing.map((user) => [user.emailCanonical, user]));
    const toInsert: ImportedUser[] = [];
    const waiting = new Map<string, Candidate>();
    for (const candidate of candidates) {
      const { user } = candidate;
      const named = byName.get(user.usernameCanonical);
      const skipped = (code: SkipCode, reason: string) =>
        summary.skipped.push({ sourceId: candidate.sourceId, username: user.username, code, reason });
      if (named) {
        // The import's earlier run: the email it brought, or the id it kept with the hash it brought (the user may have
        // changed the email since, or not logged in yet). The same id alone is a coincidence, not a proof.
        const importedBefore =
          named.emailCanonical === user.emailCanonical ||
          (named.id === candidate.seedId && named.passwordHash === user.passwordHash);
        if (importedBefore) {
          summary.alreadyPresent.push({
            sourceId: candidate.sourceId,
            id: named.id,
            username: named.username,
          });
          remember(candidate);
        } else skipped('username_taken', `the username belongs to Gatehouse user ${named.id}`);
        continue;
      }
      const lookalike = bySkeleton.get(user.usernameSkeleton);
      if (lookalike) {
        skipped('lookalike_username', `looks like "${lookalike.username}", Gatehouse user ${lookalike.id}`);
        continue;
      }
      const emailOwner = byEmail.get(user.emailCanonical);
      if (emailOwner) {
        skipped(
          'email_taken',
          `the email belongs to Gatehouse user ${emailOwner.id} ("${emailOwner.username}")`,
        );
        continue;
      }
      const holder = candidate.seedId === undefined ? undefined : byId.get(candidate.seedId);
      if (holder) {
        candidate.idProblem = `id ${holder.id} belongs to Gatehouse user "${holder.username}"`;
        candidate.keepId = undefined;
      }
      toInsert.push(candidate.keepId === undefined ? user : { ...user, id: candidate.keepId });
      waiting.set(user.usernameCanonical, candidate);
    }
    for (const inserted of await importedUsers.insertImportedUsers(toInsert, WELCOME_MESSAGE, now)) {
      const candidate = waiting.get(inserted.usernameCanonical);
      if (!candidate) continue;
      waiting.delete(inserted.usernameCanonical);
      summary.imported += 1;
      remember(candidate);
      if (candidate.keepId === undefined) {
        summary.renumbered.push({
          sourceId: candidate.sourceId,
          id: inserted.id,
          username: candidate.user.username,
          reason: candidate.idProblem ?? 'a new id',
        });
      }
    }
    return [...waiting.values()];
  };

  const flush = async (batch: Candidate[]) => {
    let pending = batch;
    while (pending.length > 0) {
      const lost = await place(pending, clock.now());
      pending = [];
      for (const candidate of lost) {
        candidate.attempts += 1;
        if (candidate.attempts < ATTEMPTS) pending.push(candidate);
        else {
          summary.skipped.push({
            sourceId: candidate.sourceId,
            username: candidate.user.username,
            code: 'concurrent_change',
            reason: 'its id, username or email kept being taken while importing: run the import again',
          });
        }
      }
    }
  };

  let batch: Candidate[] = [];
  // The in-file duplicate checks see the rows already placed: a row that repeats a name, lookalike or email of a
  // row still waiting in the batch waits for that row to be placed first.
  const batchKeys = new Set<string>();
  const keysOf = ({ user }: Candidate) => [
    `name:${user.usernameCanonical}`,
    `skeleton:${user.usernameSkeleton}`,
    `email:${user.emailCanonical}`,
  ];
  const flushBatch = async () => {
    await flush(batch);
    batch = [];
    batchKeys.clear();
  };
  for (const seed of source.users()) {
    summary.read += 1;
    let checked = check(seed);
    if ('candidate' in checked && keysOf(checked.candidate).some((key) => batchKeys.has(key))) {
      await flushBatch();
      checked = check(seed);
    }
    if ('skip' in checked) summary.skipped.push(checked.skip);
    else {
      batch.push(checked.candidate);
      for (const key of keysOf(checked.candidate)) batchKeys.add(key);
    }
    if (batch.length >= BATCH) {
      await flushBatch();
      deps.onProgress?.(summary.read, source.count);
    }
  }
  await flush(batch);
  deps.onProgress?.(summary.read, source.count);
  summary.skipped.sort((a, b) => (a.sourceId < b.sourceId ? -1 : a.sourceId > b.sourceId ? 1 : 0));
  return summary;
}

function show(value: SeedValue): string {
  if (value === null) return 'NULL';
  if (typeof value === 'string') return JSON.stringify(value);
  if (value instanceof Uint8Array) return `(${value.length} bytes)`;
  return String(value);
}
