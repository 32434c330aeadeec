import { setTimeout as sleep } from 'node:timers/promises';
import type { CompiledQuery, DatabaseConnection, Dialect, Driver, QueryResult } from 'kysely';
import { AppError } from '../errors.ts';

// A database that does not answer in time, refuses connections, or is locked by another process is an outage the
// client may retry, not a bug. (pg's own timeouts carry no code, only these messages.)
// SQLSTATE classes 08 (connection exception) and 57P (operator intervention: shutdown, restart), 53300 (too many
// connections), 57014 (statement timeout), 55000 (database not accepting connections), 3D000 (database gone).
const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  '53300',
  '57014',
  '55000',
  '3D000',
]);
const UNAVAILABLE_CODE_CLASSES = /^(08|57P)/;

function isSqliteLocked(error: unknown): boolean {
  return (
    error instanceof Error &&
    (error as { code?: unknown }).code === 'ERR_SQLITE_ERROR' &&
    /database is locked|database is busy/.test(error.message)
  );
}

// SQLite's primary result codes for a file that cannot be written now: READONLY, IOERR (extended codes too), FULL,
// CANTOPEN (connect.ts raises it for a file deleted under the server). An outage of the disk, not a bug.
const SQLITE_UNWRITABLE = new Set([8, 10, 13, 14]);

/** Whether a node:sqlite error says the file cannot be written now (read-only, I/O error, full, cannot be opened). */
export function isSqliteUnwritable(error: unknown): boolean {
  const result = (error as { errcode?: unknown } | undefined)?.errcode;
  return typeof result === 'number' && SQLITE_UNWRITABLE.has(result & 0xff);
}

function isDatabaseUnavailable(error: Error): boolean {
  const code = (error as { code?: unknown }).code;
  const message = error.message;
  if (code === 'ERR_SQLITE_ERROR') return isSqliteLocked(error) || isSqliteUnwritable(error);
  return (
    (typeof code === 'string' && (UNAVAILABLE_CODES.has(code) || UNAVAILABLE_CODE_CLASSES.test(code))) ||
    message === 'Query read timeout' ||
    message.startsWith('timeout exceeded when trying to connect') ||
    message.startsWith('Connection terminated') ||
    // pg, on a client whose connection broke earlier (a rollback after the failed query, say).
    message.includes('is not queryable')
  );
}

// PostgreSQL data exceptions (class 22: a NUL byte in text, a value out of range) come from client input that slipped
// past validation: the value cannot be stored, which is the client's mistake, never a 500.
function isUnstorableValue(error: Error): boolean {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' && /^22[0-9A-Z]{3}$/.test(code) && 'severity' in error;
}

// Every foreign key leads to a user row (cascading on delete), but refresh_tokens' to its session, which goes with its
// user or once ended: a write that breaks one is a write for an account (or session) deleted since its request read
// it, between a password check and an insert, say. PostgreSQL's 23503; SQLite's extended code
// SQLITE_CONSTRAINT_FOREIGNKEY (787). Logged at warn with the constraint (a write naming a row that never was is a bug).
function isForeignKeyViolation(error: Error): boolean {
  const code = (error as { code?: unknown }).code;
  if (code === 'ERR_SQLITE_ERROR') {
    return (
      (error as { errcode?: unknown }).errcode === 787 ||
      error.message.includes('FOREIGN KEY constraint failed')
    );
  }
  return code === '23503' && 'severity' in error;
}

/**
 * Returns the project's own error for a driver error it recognises (outage, unstorable value, a write for an account
 * gone meanwhile), else the error as is.
 */
export function translateDatabaseError(error: unknown): unknown {
  if (!(error instanceof Error) || error instanceof AppError) return error;
  if (isDatabaseUnavailable(error)) {
    return new AppError('service_unavailable', 'The database is unavailable; try again shortly', {
      cause: error,
      unavailableReason: 'database_unavailable',
    });
  }
  if (isForeignKeyViolation(error)) {
    return new AppError('account_gone', 'The account this request acts for no longer exists', {
      cause: error,
    });
  }
  if (isUnstorableValue(error)) {
    return new AppError('unstorable_value', 'Input contains a value the database cannot store', {
      cause: error,
    });
  }
  return error;
}

/** How a SQLite connection waits for another process's write lock: off the event loop, within a budget. */
export interface SqliteLockWaits {
  /** Whether the connection is inside a transaction, where a statement that failed may not simply run again. */
  isInTransaction(): boolean;
  budgetMs: number;
}

/**
 * Wraps a Kysely dialect so that every query, transaction statement and connection attempt throws translated
 * errors: what is above db/ never meets a driver's error codes. Unique violations pass through untouched, for the
 * repository that knows which index means what. With `lockWaits` (SQLite), a statement refused because another
 * process holds the lock is tried again after a timer, until the budget is spent, and only then is an outage.
 */
export function translatingDatabaseErrors(dialect: Dialect, lockWaits?: SqliteLockWaits): Dialect {
  return {
    createDriver: () => translateDriverErrors(dialect.createDriver(), lockWaits),
    createQueryCompiler: () => dialect.createQueryCompiler(),
    createAdapter: () => dialect.createAdapter(),
    createIntrospector: (db) => dialect.createIntrospector(db),
  };
}

function translateDriverErrors(driver: Driver, lockWaits: SqliteLockWaits | undefined): Driver {
  const translated = new WeakSet<DatabaseConnection>();
  const acquireConnection = driver.acquireConnection.bind(driver);
  // Patched in place, not wrapped: the drivers release and run transactions on the very object they handed out.
  driver.acquireConnection = async () => {
    const connection = await acquireConnection().catch((error: unknown) => {
      throw translateDatabaseError(error);
    });
    if (!translated.has(connection)) {
      const executeQuery = connection.executeQuery.bind(connection);
      const execute = lockWaits
        ? <R>(query: CompiledQuery) => executeWaitingForLocks<R>(() => executeQuery<R>(query), lockWaits)
        : <R>(query: CompiledQuery) => executeQuery<R>(query);
      // Async: Kysely's SQLite connection throws synchronously, which a bare .catch() would let through untranslated
      // (a locked database then answered 500 instead of 503).
      connection.executeQuery = async <R>(query: CompiledQuery): Promise<QueryResult<R>> => {
        try {
          return await execute<R>(query);
        } catch (error) {
          throw translateDatabaseError(error);
        }
      };
      translated.add(connection);
    }
    return connection;
  };
  return driver;
}

/**
 * node:sqlite's busy timeout waits inside the call, holding the event loop (measured: a lock held 1.5 s by another
 * process stalled every request of this one for 1.5 s). With the busy timeout at zero, a locked statement fails at
 * once and is tried again here after a timer. Again only when the failed statement changed nothing: outside a
 * transaction, which includes the `begin immediate` that opens one (connect.ts); inside one, the whole transaction
 * fails and rolls back, as before.
 */
async function executeWaitingForLocks<R>(
  execute: () => Promise<QueryResult<R>>,
  lockWaits: SqliteLockWaits,
): Promise<QueryResult<R>> {
  const giveUpAt = performance.now() + lockWaits.budgetMs;
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await execute();
    } catch (error) {
      if (!isSqliteLocked(error) || lockWaits.isInTransaction() || performance.now() >= giveUpAt) throw error;
      await sleep(Math.min(2 ** attempt, 20));
    }
  }
}
