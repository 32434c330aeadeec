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

function isDatabaseUnavailable(error: Error): boolean {
  const code = (error as { code?: unknown }).code;
  const message = error.message;
  if (code === 'ERR_SQLITE_ERROR') return /database is locked|database is busy/.test(message);
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

/** Returns the project's own error for a driver error it recognises (outage, unstorable value), else the error as is. */
export function translateDatabaseError(error: unknown): unknown {
  if (!(error instanceof Error) || error instanceof AppError) return error;
  if (isDatabaseUnavailable(error)) {
    return new AppError('service_unavailable', 'The database is unavailable; try again shortly', {
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

/**
 * Wraps a Kysely dialect so that every query, transaction statement and connection attempt throws translated
 * errors: what is above db/ never meets a driver's error codes. Unique violations pass through untouched, for the
 * repository that knows which index means what.
 */
export function translatingDatabaseErrors(dialect: Dialect): Dialect {
  return {
    createDriver: () => translateDriverErrors(dialect.createDriver()),
    createQueryCompiler: () => dialect.createQueryCompiler(),
    createAdapter: () => dialect.createAdapter(),
    createIntrospector: (db) => dialect.createIntrospector(db),
  };
}

function translateDriverErrors(driver: Driver): Driver {
  const translated = new WeakSet<DatabaseConnection>();
  const acquireConnection = driver.acquireConnection.bind(driver);
  // Patched in place, not wrapped: the drivers release and run transactions on the very object they handed out.
  driver.acquireConnection = async () => {
    const connection = await acquireConnection().catch((error: unknown) => {
      throw translateDatabaseError(error);
    });
    if (!translated.has(connection)) {
      const executeQuery = connection.executeQuery.bind(connection);
      // Async, so that the SQLite driver's synchronous throws are translated too, not only rejections.
      connection.executeQuery = async <R>(query: CompiledQuery): Promise<QueryResult<R>> => {
        try {
          return await executeQuery<R>(query);
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
