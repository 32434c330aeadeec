import {
  chmodSync,
  closeSync,
  linkSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';

const SQLITE_SUFFIXES = ['', '-wal', '-shm', '-journal'];
export const SECRET_FILE_NAME = 'secret.key';

/**
 * Makes the SQLite file's directory private (0700) and the database files 0600: they hold password hashes and sealed
 * keys. An existing directory that is more open is tightened only when it holds nothing but Gatehouse's files (never
 * /tmp, a home or a system folder); otherwise it is left as it is and a warning says so. Returns the warnings.
 */
export function preparePrivateDatabaseFiles(databasePath: string): string[] {
  const warnings: string[] = [];
  const directory = dirname(databasePath);
  const ownNames = new Set([
    ...SQLITE_SUFFIXES.map((suffix) => basename(databasePath) + suffix),
    SECRET_FILE_NAME,
  ]);
  mkdirSync(directory, { recursive: true, mode: 0o700 });
  const mode = statSync(directory).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    const onlyOurs = readdirSync(directory).every(
      (name) => ownNames.has(name) || name.startsWith(`${SECRET_FILE_NAME}.`),
    );
    if (onlyOurs) {
      chmodSync(directory, 0o700);
      warnings.push(`${directory} was readable by other users (mode ${mode.toString(8)}); it is now 0700`);
    } else {
      warnings.push(
        `${directory} is readable by other users (mode ${mode.toString(8)}) and holds other files, so it was left as it is: keep the database in a directory of its own (0700)`,
      );
    }
  }
  // Created before SQLite opens it: SQLite gives its -wal and -shm files the database file's permissions.
  closeSync(openSync(databasePath, 'a', 0o600));
  for (const suffix of SQLITE_SUFFIXES) tightenFile(databasePath + suffix, warnings);
  return warnings;
}

function tightenFile(path: string, warnings: string[]): void {
  let mode: number;
  try {
    mode = statSync(path).mode & 0o777;
  } catch {
    return;
  }
  if ((mode & 0o077) === 0) return;
  chmodSync(path, 0o600);
  warnings.push(`${path} was readable by other users (mode ${mode.toString(8)}); it is now 0600`);
}

/** The path of the key-encryption secret kept beside a SQLite database when GATEHOUSE_SECRET is not set. */
export function secretFilePath(databasePath: string): string {
  return join(dirname(databasePath), SECRET_FILE_NAME);
}

/**
 * Returns the secret file's content, first writing `candidate` (0600) if there is none. Instances starting together
 * agree: the file appears whole or not at all (a hard link of a complete temporary file), and the loser reads it.
 */
export function readOrCreateSecretFile(
  path: string,
  candidate: string,
): { content: string; created: boolean } {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  try {
    return { content: readSecretFile(path), created: false };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const temporary = `${path}.${process.pid}.${Date.now()}.tmp`;
  writeFileSync(temporary, `${candidate}\n`, { mode: 0o600, flag: 'wx' });
  try {
    linkSync(temporary, path);
    return { content: candidate, created: true };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    return { content: readSecretFile(path), created: false };
  } finally {
    rmSync(temporary, { force: true });
  }
}

function readSecretFile(path: string): string {
  const mode = statSync(path).mode & 0o777;
  if ((mode & 0o077) !== 0) chmodSync(path, 0o600);
  return readFileSync(path, 'utf8').trim();
}

/** Replaces the secret file atomically (a reader sees the old content or the new, never a mix). */
export function replaceSecretFile(path: string, content: string): void {
  const temporary = `${path}.${process.pid}.${Date.now()}.tmp`;
  writeFileSync(temporary, `${content}\n`, { mode: 0o600, flag: 'wx' });
  renameSync(temporary, path);
}
