import {
  chmodSync,
  closeSync,
  constants,
  fsyncSync,
  linkSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  type Stats,
  statSync,
  writeSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';

const SQLITE_SUFFIXES = ['', '-wal', '-shm', '-journal'];
const SECRET_FILE_NAME = 'secret.key';
const STICKY_BIT = 0o1000;

const openToOthers = (stats: Stats) => (stats.mode & 0o077) !== 0;
const octal = (stats: Stats) => (stats.mode & 0o777).toString(8);

// The first 16 bytes of every SQLite database file.
const SQLITE_HEADER = Buffer.from('SQLite format 3\0', 'latin1');

/**
 * Throws unless the path holds nothing yet, an empty file or a SQLite database: the files Gatehouse may make its own
 * (tighten, put a secret.key beside). A typo in DATABASE_URL naming another file (`sqlite:/etc/passwd`) then changes
 * nothing on disk.
 */
export function assertDatabaseFileOrNothing(databasePath: string): void {
  const stats = statUnlinked(databasePath);
  if (!stats || (stats.isFile() && stats.size === 0)) return;
  const refusal = new Error(
    `${databasePath} is not a SQLite database: refusing to use it (nothing was changed)`,
  );
  if (!stats.isFile()) throw refusal;
  const header = Buffer.alloc(SQLITE_HEADER.length);
  const descriptor = openSync(databasePath, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    readSync(descriptor, header, 0, header.length, 0);
  } finally {
    closeSync(descriptor);
  }
  if (!header.equals(SQLITE_HEADER)) throw refusal;
}

/**
 * Makes the SQLite file's directory private (0700) and the database files 0600: they hold password hashes and sealed
 * keys. An existing directory that others can read is tightened only when it is plainly Gatehouse's own: owned by
 * this user, not sticky or world-writable (never /tmp), and holding nothing but Gatehouse's files; otherwise it is
 * left as it is and a warning says so. Returns the warnings.
 */
export function preparePrivateDatabaseFiles(databasePath: string): string[] {
  assertDatabaseFileOrNothing(databasePath);
  const warnings: string[] = [];
  const directory = dirname(databasePath);
  const ownNames = new Set([
    ...SQLITE_SUFFIXES.map((suffix) => basename(databasePath) + suffix),
    SECRET_FILE_NAME,
  ]);
  mkdirSync(directory, { recursive: true, mode: 0o700 });
  const stats = statSync(directory);
  if (openToOthers(stats)) {
    const ours =
      stats.uid === process.getuid?.() &&
      (stats.mode & (STICKY_BIT | 0o002)) === 0 &&
      readdirSync(directory).every((name) => ownNames.has(name) || name.startsWith(`${SECRET_FILE_NAME}.`));
    if (ours && tryChmod(directory, 0o700)) {
      warnings.push(`${directory} was readable by other users (mode ${octal(stats)}); it is now 0700`);
    } else {
      warnings.push(
        `${directory} is readable by other users (mode ${octal(stats)}) and was left as it is: keep the database in a directory of its own (0700)`,
      );
    }
  }
  statUnlinked(databasePath);
  // Created before SQLite opens it: SQLite gives its -wal and -shm files the database file's permissions.
  closeSync(openSync(databasePath, constants.O_CREAT | constants.O_WRONLY | constants.O_NOFOLLOW, 0o600));
  for (const suffix of SQLITE_SUFFIXES) tightenFile(databasePath + suffix, warnings);
  return warnings;
}

/**
 * Returns the entry's own status, or undefined when it does not exist. Throws for a symbolic link: in a directory
 * others can write to, a planted link would make this process create, open or chmod another file.
 */
function statUnlinked(path: string): Stats | undefined {
  let stats: Stats;
  try {
    stats = lstatSync(path);
  } catch {
    return undefined;
  }
  if (stats.isSymbolicLink()) throw new Error(`${path} is a symbolic link: refusing to use it`);
  return stats;
}

function tryChmod(path: string, mode: number): boolean {
  try {
    chmodSync(path, mode);
    return true;
  } catch {
    return false;
  }
}

function tightenFile(path: string, warnings: string[]): void {
  const stats = statUnlinked(path);
  if (!stats || !openToOthers(stats)) return;
  if (tryChmod(path, 0o600)) {
    warnings.push(`${path} was readable by other users (mode ${octal(stats)}); it is now 0600`);
  } else {
    warnings.push(`${path} is readable by other users (mode ${octal(stats)}) and could not be tightened`);
  }
}

/** The path of the key-encryption secret kept beside a SQLite database when GATEHOUSE_SECRET is not set. */
export function secretFilePath(databasePath: string): string {
  return join(dirname(databasePath), SECRET_FILE_NAME);
}

export interface SecretFile {
  content: string;
  created: boolean;
  /** Set when the file was readable by others: it was tightened, but the secret may have been read. */
  exposedMode?: string;
}

/**
 * Returns the secret file's content, first writing `candidate` (0600) if there is none. Instances starting together
 * agree: the file appears whole or not at all (a hard link of a complete, synced temporary file), and the loser
 * reads the winner's.
 */
export function readOrCreateSecretFile(path: string, candidate: string): SecretFile {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  try {
    return { ...readSecretFile(path), created: false };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const temporary = writeSyncedTemporary(path, candidate);
  try {
    linkSync(temporary, path);
    syncDirectory(dirname(path));
    return { content: candidate, created: true };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    return { ...readSecretFile(path), created: false };
  } finally {
    rmSync(temporary, { force: true });
  }
}

function readSecretFile(path: string): { content: string; exposedMode?: string } {
  const stats = statUnlinked(path);
  if (!stats) throw Object.assign(new Error(`${path} does not exist`), { code: 'ENOENT' });
  const content = readFileSync(path, 'utf8').trim();
  if (!openToOthers(stats)) return { content };
  tryChmod(path, 0o600);
  return { content, exposedMode: octal(stats) };
}

/**
 * Replaces the secret file atomically and durably: a reader, or the machine after a power cut, sees the old content
 * or the new, never a mix or nothing.
 */
export function replaceSecretFile(path: string, content: string): void {
  const temporary = writeSyncedTemporary(path, content);
  renameSync(temporary, path);
  syncDirectory(dirname(path));
}

function writeSyncedTemporary(path: string, content: string): string {
  const temporary = `${path}.${process.pid}.${Date.now()}.tmp`;
  const descriptor = openSync(
    temporary,
    constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY | constants.O_NOFOLLOW,
    0o600,
  );
  try {
    writeSync(descriptor, `${content}\n`);
    fsyncSync(descriptor);
  } finally {
    closeSync(descriptor);
  }
  return temporary;
}

function syncDirectory(directory: string): void {
  const descriptor = openSync(directory, constants.O_RDONLY);
  try {
    fsyncSync(descriptor);
  } finally {
    closeSync(descriptor);
  }
}

/**
 * Takes the secret file's rotation lock, or throws when another rotation holds it: two rotations at once would each
 * write a new secret, and the last file written would not open what the other sealed. Returns the release.
 */
export function lockSecretFile(path: string): () => void {
  const lock = `${path}.lock`;
  try {
    closeSync(
      openSync(lock, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY | constants.O_NOFOLLOW, 0o600),
    );
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    throw new Error(
      `another rotation holds ${lock} (if none runs, a rotation was interrupted: remove the file)`,
    );
  }
  return () => rmSync(lock, { force: true });
}
