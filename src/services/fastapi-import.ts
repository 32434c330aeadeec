import type { FastapiSeedUser, SeedValue } from '../db/fastapi-seed.ts';
import type { ImportedUserRow, ImportedUsersRepository } from '../db/imported-users.ts';
import { LEVELS, type Level } from '../domain/user.ts';
import type { Clock } from '../security/clock.ts';
import { findUsernameProblem, usernameSkeleton } from '../security/usernames.ts';
import { normaliseUsername, WELCOME_MESSAGE } from './accounts.ts';

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
const MAX_USER_ID = 2_147_483_647;
const MAX_AGE = 150;
const BATCH = 500;
// A row that lost a race with a registration is judged again against what is there now; more than this many
// losses in a row means something keeps changing the users, and the row is left for a later run.
const ATTEMPTS = 3;

// passlib's bcrypt: $2b$ (or the older $2a$/$2y$), a two-digit cost, 22 characters of salt and 31 of hash.
const BCRYPT_HASH = /^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/;
// ajv-formats' full `email` format, which POST /register/ checks: the import lets in no address registration refuses.
const EMAIL =
  /^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/i;

interface Candidate {
  sourceId: bigint;
  /** The seed's id when Gatehouse can keep it, or why not. */
  keepId: number | undefined;
  idProblem: string | undefined;
  row: ImportedUserRow;
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
  // every id of the file, and takes none that a later row is about to keep.
  const maxId = source.maxIdUpTo(MAX_USER_ID);
  if (maxId !== undefined && maxId > 0) await importedUsers.moveUserIdsPast(maxId);

  const skip = (seed: FastapiSeedUser, code: SkipCode, reason: string): Checked => ({
    skip: {
      sourceId: seed.id,
      username: typeof seed.username === 'string' ? seed.username : null,
      code,
      reason,
    },
  });

  const check = (seed: FastapiSeedUser, now: Date): Checked => {
    const username = typeof seed.username === 'string' ? normaliseUsername(seed.username) : undefined;
    if (!username) {
      return skip(seed, 'invalid_username', "the username must be 3 to 32 letters, digits, '.', '_' or '-'");
    }
    const usernameProblem = findUsernameProblem(username.display);
    if (usernameProblem) return skip(seed, 'invalid_username', USERNAME_PROBLEMS[usernameProblem]);
    const email = typeof seed.email === 'string' ? seed.email.trim() : undefined;
    const emailProblem = findEmailProblem(email);
    if (emailProblem || email === undefined) return skip(seed, 'invalid_email', emailProblem ?? 'no email');
    if (typeof seed.hashedPassword !== 'string' || !BCRYPT_HASH.test(seed.hashedPassword)) {
      return skip(
        seed,
        'invalid_password_hash',
        'the password hash is not a bcrypt hash: nobody could log in',
      );
    }
    if (typeof seed.age !== 'bigint' || seed.age < 0n || seed.age > BigInt(MAX_AGE)) {
      return skip(
        seed,
        'invalid_age',
        `the age ${show(seed.age)} is not a whole number from 0 to ${MAX_AGE}`,
      );
    }
    if (typeof seed.level !== 'string' || !(LEVELS as readonly string[]).includes(seed.level)) {
      return skip(seed, 'invalid_level', `the level ${show(seed.level)} is not one of ${LEVELS.join(', ')}`);
    }
    const skeleton = usernameSkeleton(username.display);
    const emailCanonical = email.toLowerCase();
    const sameName = seenNames.get(username.canonical);
    if (sameName !== undefined) {
      return skip(seed, 'duplicate_username', `the same username as source id ${sameName}, imported instead`);
    }
    const lookalike = seenSkeletons.get(skeleton);
    if (lookalike) {
      return skip(
        seed,
        'duplicate_username',
        `looks like "${lookalike.username}" (source id ${lookalike.sourceId}), imported instead`,
      );
    }
    const sameEmail = seenEmails.get(emailCanonical);
    if (sameEmail !== undefined) {
      return skip(seed, 'duplicate_email', `the same email as source id ${sameEmail}, imported instead`);
    }
    const fits = seed.id >= 1n && seed.id <= BigInt(MAX_USER_ID);
    return {
      candidate: {
        sourceId: seed.id,
        keepId: fits ? Number(seed.id) : undefined,
        idProblem: fits ? undefined : `id ${seed.id} is outside Gatehouse's ids (1 to ${MAX_USER_ID})`,
        attempts: 0,
        row: {
          username: username.display,
          username_canonical: username.canonical,
          username_skeleton: skeleton,
          email,
          email_canonical: emailCanonical,
          password_hash: seed.hashedPassword,
          age: Number(seed.age),
          level: seed.level as Level,
          created_at_ms: now.getTime(),
          updated_at_ms: now.getTime(),
        },
      },
    };
  };

  const remember = (candidate: Candidate) => {
    seenNames.set(candidate.row.username_canonical, candidate.sourceId);
    seenSkeletons.set(candidate.row.username_skeleton, {
      sourceId: candidate.sourceId,
      username: candidate.row.username,
    });
    seenEmails.set(candidate.row.email_canonical, candidate.sourceId);
  };

  /** Judges the candidates against Gatehouse's users, inserts those that may come in, and returns those that lost a race. */
  const place = async (candidates: Candidate[], now: Date): Promise<Candidate[]> => {
    const clashing = await importedUsers.findClashingUsers({
      ids: candidates.flatMap((candidate) => (candidate.keepId === undefined ? [] : [candidate.keepId])),
      usernameCanonicals: candidates.map((candidate) => candidate.row.username_canonical),
      usernameSkeletons: candidates.map((candidate) => candidate.row.username_skeleton),
      emailCanonicals: candidates.map((candidate) => candidate.row.email_canonical),
    });
    const byId = new Map(clashing.map((user) => [user.id, user]));
    const byName = new Map(clashing.map((user) => [user.usernameCanonical, user]));
    const bySkeleton = new Map(clashing.map((user) => [user.usernameSkeleton, user]));
    const byEmail = new Map(clashing.map((user) => [user.emailCanonical, user]));
    const toInsert: ImportedUserRow[] = [];
    const waiting = new Map<string, Candidate>();
    for (const candidate of candidates) {
      const { row } = candidate;
      const named = byName.get(row.username_canonical);
      const skipped = (code: SkipCode, reason: string) =>
        summary.skipped.push({ sourceId: candidate.sourceId, username: row.username, code, reason });
      if (named) {
        // The import's earlier run (the id kept, or the email it brought, if the user changed it since).
        if (named.id === candidate.keepId || named.emailCanonical === row.email_canonical) {
          summary.alreadyPresent.push({
            sourceId: candidate.sourceId,
            id: named.id,
            username: named.username,
          });
          remember(candidate);
        } else skipped('username_taken', `the username belongs to Gatehouse user ${named.id}`);
        continue;
      }
      const lookalike = bySkeleton.get(row.username_skeleton);
      if (lookalike) {
        skipped('lookalike_username', `looks like "${lookalike.username}", Gatehouse user ${lookalike.id}`);
        continue;
      }
      const emailOwner = byEmail.get(row.email_canonical);
      if (emailOwner) {
        skipped(
          'email_taken',
          `the email belongs to Gatehouse user ${emailOwner.id} ("${emailOwner.username}")`,
        );
        continue;
      }
      if (candidate.keepId !== undefined && byId.has(candidate.keepId)) {
        candidate.idProblem = `id ${candidate.keepId} belongs to Gatehouse user "${byId.get(candidate.keepId)?.username}"`;
        candidate.keepId = undefined;
      }
      toInsert.push(candidate.keepId === undefined ? row : { ...row, id: candidate.keepId });
      waiting.set(row.username_canonical, candidate);
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
          username: candidate.row.username,
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
            username: candidate.row.username,
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
  const keysOf = ({ row }: Candidate) => [
    `name:${row.username_canonical}`,
    `skeleton:${row.username_skeleton}`,
    `email:${row.email_canonical}`,
  ];
  const flushBatch = async () => {
    await flush(batch);
    batch = [];
    batchKeys.clear();
  };
  for (const seed of source.users()) {
    summary.read += 1;
    let checked = check(seed, clock.now());
    if ('candidate' in checked && keysOf(checked.candidate).some((key) => batchKeys.has(key))) {
      await flushBatch();
      checked = check(seed, clock.now());
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

const USERNAME_PROBLEMS = {
  mixed_scripts: 'the username mixes scripts (as lookalike names do)',
  mixed_digit_systems: 'the username mixes digits of different systems',
  no_letter_or_digit: 'the username has neither a letter nor a digit',
} as const;

function findEmailProblem(email: string | undefined): string | undefined {
  if (email === undefined || email === '') return 'no email';
  if (email.length > 254 || !EMAIL.test(email)) return `"${email}" is not a valid email address`;
  // RFC 5321's limit, which registration enforces too.
  if (email.lastIndexOf('@') > 64) return 'the part of the email before @ is longer than 64 characters';
  return undefined;
}

function show(value: SeedValue): string {
  if (value === null) return 'NULL';
  if (typeof value === 'string') return JSON.stringify(value);
  if (value instanceof Uint8Array) return `(${value.length} bytes)`;
  return String(value);
}
