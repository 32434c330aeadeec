import { readdirSync, readlinkSync, type Stats, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { Kysely, PostgresDialect, type SqliteDatabase, SqliteDialect, type SqliteStatement } from 'kysely';
import type pg from 'pg';
import { preparePrivateDatabaseFiles } from './data-directory.ts';
import { isSqliteUnwritable, translatingDatabaseErrors } from './database-errors.ts';
import { preparedStatementNames, registerDirectReader } from './prepared.ts';
import type { Database, Dialect } from './schema.ts';

export interface DbHandle {
  db: Kysely<Database>;
  dialect: Dialect;
  /** The PostgreSQL schema that holds the tables; undefined on SQLite. */
  schema: string | undefined;
  /** What opening found and mended, for the caller to log (a database directory readable by others). */
  warnings: string[];
  /** The PostgreSQL pool's connections and waiting queries, for metrics; absent on SQLite, which has no pool. */
  poolStats?(): PoolStats;
  /**
   * Why the database cannot be used as it is now, for readiness: a SQLite file deleted or replaced since it was
   * opened, or writes failing for want of space or for an I/O error; undefined while it is well.
   */
  problem?(): string | undefined;
  /**
   * While writes are failing, tries one of its own, so that problem() clears once they land again even when no
   * request writes (none does while a balancer keeps the instance out for that very problem).
   */
  probeWrites?(): Promise<void>;
  close(): Promise<void>;
}

export interface PoolStats {
  total: number;
  idle: number;
  waiting: number;
  max: number;
}

export type DbTarget =
  | { kind: 'sqlite'; path: string }
  | {
      kind: 'postgres';
      url: string;
      schema?: string;
      maxConnections?: number;
      /** How long a query may wait for its answer before it fails as unavailable; 5 s unless a test changes it. */
      queryTimeoutMs?: number;
    };

const INT8_OID = 20;

type PgModule = typeof import('pg').default;

// The PostgreSQL driver is loaded only for a PostgreSQL URL: an SQLite server never holds its code.
const require = createRequire(import.meta.url);

/** Opens the configured database: an embedded SQLite file through node:sqlite, or a PostgreSQL pool. */
export function createDb(target: DbTarget): DbHandle {
  if (target.kind === 'postgres') {
    const pg: PgModule = require('pg');
    const pool = new pg.Pool({
      connectionString: target.url,
      max: target.maxConnections ?? 10,
      // A database that stops answering must turn into 503s and failed readiness, not requests that hang. Under the
      // refresh token's 10 s reuse grace: a rotation committed whose answer was lost is retried by its client within
      // it, and taken for a retry, not a theft (with 10 s, the retry after the 503 always came too late).
      connectionTimeoutMillis: 5000,
      query_timeout: target.queryTimeoutMs ?? 5000,
      // Timestamps are epoch milliseconds in int8 columns; they fit a double exactly.
      types: {
        getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
          oid === INT8_OID ? Number : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
      },
      ...(target.schema ? { options: `-c search_path=${target.schema}` } : {}),
    });
    // An idle client that loses its server emits 'error'; without a listener that would crash the process (for a
    // client a request holds, see namingPreparedStatements).
    pool.on('error', () => {});
    const db = new Kysely<Database>({
      dialect: translatingDatabaseErrors(new PostgresDialect({ pool: namingPreparedStatements(pg, pool) })),
    });
    return {
      db,
      dialect: 'postgres',
      schema: target.schema ?? 'public',
      warnings: [],
      poolStats: () => ({
        total: pool.totalCount,
        idle: pool.idleCount,
        waiting: pool.waitingCount,
        max: pool.options.max,
      }),
      close: () => db.destroy(),
    };
  }
  const warnings = target.path === ':memory:' ? [] : preparePrivateDatabaseFiles(target.path);
  const sqlite = openSqlite(target.path);
  const health = watchSqliteFile(target.path);
  const adapted = adaptNodeSqlite(sqlite, health);
  const db = new Kysely<Database>({
    dialect: translatingDatabaseErrors(new SqliteDialect({ database: adapted }), {
      isInTransaction: () => sqlite.isTransaction,
      budgetMs: SQLITE_LOCK_WAIT_MS,
    }),
  });
  registerDirectReader(db, (query) => {
    // Inside another request's open transaction a read would see its uncommitted writes: Kysely queues it instead.
    if (sqlite.isTransaction) return undefined;
    try {
      const statement = adapted.prepare(query.sql);
      return statement.reader ? (statement.all(query.parameters) as unknown[]) : undefined;
    } catch {
      // A lock held by another process, or a real error: Kysely's path waits for the one and reports the other.
      return undefined;
    }
  });
  return {
    db,
    dialect: 'sqlite',
    schema: undefined,
    warnings,
    problem: health.problem,
    async probeWrites() {
      if (health.problem() === undefined) return;
      // Its failure is recorded by the statement's watcher, and is what problem() then says.
      await db
        .insertInto('readiness_probe')
        .values({ id: 1, written_at_ms: Date.now() })
        .onConflict((conflict) =>
          conflict.column('id').doUpdateSet((eb) => ({ written_at_ms: eb.ref('excluded.written_at_ms') })),
        )
        .execute()
        .catch(() => {});
    },
    close: async () => {
      health.stop();
      await db.destroy();
    },
  };
}

/**
 * Gives the hot queries (prepareQuery) a statement name, so each connection parses and plans them once rather
 * than on every request. Other SQL, whose text varies, stays unnamed. Also listens for errors on every client.
 */
function namingPreparedStatements(pg: PgModule, pool: pg.Pool): pg.Pool {
  const wrapped = new WeakSet<pg.PoolClient>();
  const broken = new WeakSet<pg.PoolClient>();
  const connect = pool.connect.bind(pool) as () => Promise<pg.PoolClient>;
  pool.connect = (async () => {
    const client = await connect();
    if (!wrapped.has(client)) {
      // A client whose connection breaks while checked out (PostgreSQL stopped, say) fails its queries, which report
      // the outage, and also emits 'error', which pg-pool listens for only while the client is idle: unheard, that
      // event crashed the process. The pool drops the client on release, since it is no longer queryable.
      client.on('error', () => {});
      // A query that failed for want of an answer (pg's query_timeout, a reset) leaves the connection unusable: its
      // query is still pending on it, or the network path is gone for good (a firewall that lost its state). Released
      // to the pool as it is, every later query sent on it timed out too. Only PostgreSQL's own errors (a constraint,
      // a cancelled statement) leave it as good as before.
      const query = client.query.bind(client) as (...args: unknown[]) => unknown;
      client.query = ((text: unknown, values?: unknown) => {
        // A statement after one that went unanswered (Kysely's ROLLBACK) would wait behind it for a timeout of its own.
        if (broken.has(client)) {
          return Promise.reject(new Error('Connection is not queryable: a query on it went unanswered'));
        }
        const name = typeof text === 'string' ? preparedStatementNames.get(text) : undefined;
        const result = name ? query({ name, text, values }) : query(text, values);
        if (result instanceof Promise) {
          result.catch((error: unknown) => {
            if (!(error instanceof pg.DatabaseError)) broken.add(client);
          });
        }
        return result;
      }) as typeof client.query;
      wrapped.add(client);
    }
    // pg-pool gives the client a new release at every checkout.
    const release = client.release.bind(client);
    client.release = ((destroy?: Error | boolean) =>
      release(destroy || broken.has(client))) as typeof client.release;
    return client;
  }) as typeof pool.connect;
  return pool;
}

// How long a statement may wait for another process's lock before the request answers 503.
const SQLITE_LOCK_WAIT_MS = 5000;

function openSqlite(path: string): DatabaseSync {
  const sqlite = new DatabaseSync(path);
  // First: several processes (instances starting together, a migration beside a server) may share the file,
  // and switching to WAL below itself needs the lock. Nothing serves requests yet, so waiting in the call is fine.
  sqlite.exec(`PRAGMA busy_timeout = ${SQLITE_LOCK_WAIT_MS}`);
  sqlite.exec('PRAGMA journal_mode = WAL');
  sqlite.exec('PRAGMA synchronous = NORMAL');
  sqlite.exec('PRAGMA foreign_keys = ON');
  // From now on a lock wait must not hold the event loop: a locked statement fails at once, and
  // translatingDatabaseErrors tries it again after a timer.
  sqlite.exec('PRAGMA busy_timeout = 0');
  return sqlite;
}

/** What a SQLite database's file and writes have shown since it was opened. */
interface SqliteHealth {
  problem(): string | undefined;
  /** Throws, as a file that cannot be opened would, while the file at the path is not the one opened. */
  refuseIfLost(): void;
  failed(error: unknown): void;
  wrote(): void;
  stop(): void;
}

const FILE_CHECK_INTERVAL_MS = 1000;

/**
 * Watches that the file at `path` stays the one opened: deleted or replaced (an operator's mistake, a restore), what
 * this process writes goes to a file nobody will open again, so every statement is refused from then on. Tracks the
 * last write that failed for want of space or for an I/O error, until a write succeeds.
 */
function watchSqliteFile(path: string): SqliteHealth {
  let lost: string | undefined;
  let writeFailure: string | undefined;
  const opened = path === ':memory:' ? undefined : statSync(path);
  const check = () => {
    if (!opened || lost) return;
    let now: Stats | undefined;
    try {
      now = statSync(path);
    } catch {
      now = undefined;
    }
    if (now && now.ino === opened.ino && now.dev === opened.dev) return;
    const copy = openCopyOf(path);
    lost =
      `the SQLite file ${path} was ${now ? 'replaced' : 'deleted'} after this process opened it: what it wrote since ` +
      `is only in the file it still holds open${copy ? ` (${copy} while it runs)` : ''}, and it writes nothing more`;
  };
  const timer = opened ? setInterval(check, FILE_CHECK_INTERVAL_MS).unref() : undefined;
  return {
    problem: () => lost ?? writeFailure,
    refuseIfLost() {
      if (lost) throw Object.assign(new Error(lost), { code: 'ERR_SQLITE_ERROR', errcode: 14 });
    },
    failed(error) {
      if (isSqliteUnwritable(error)) writeFailure = `writes to ${path} fail: ${(error as Error).message}`;
    },
    wrote() {
      writeFailure = undefined;
    },
    stop: () => clearInterval(timer),
  };
}

/** The /proc path of this process's descriptor of a deleted or replaced file, to copy it back from; undefined if none. */
function openCopyOf(path: string): string | undefined {
  try {
    const target = resolve(path);
    for (const fd of readdirSync('/proc/self/fd')) {
      const link = `/proc/self/fd/${fd}`;
      try {
        if (readlinkSync(link) === `${target} (deleted)`) return `/proc/${process.pid}/fd/${fd}`;
      } catch {
        // Closed meanwhile.
      }
    }
  } catch {
    // No /proc: nothing to point at.
  }
  return undefined;
}

/** Presents node:sqlite's DatabaseSync as the better-sqlite3-shaped object Kysely's SqliteDialect expects. */
function adaptNodeSqlite(sqlite: DatabaseSync, health: SqliteHealth): SqliteDatabase {
  const statements = new Map<string, SqliteStatement>();
  const pending: TransactionWrites = { changed: false };
  return {
    close: () => sqlite.close(),
    prepare(query: string): SqliteStatement {
      health.refuseIfLost();
      // SQLite ends a transaction itself when a statement in it fails for a full disk or an I/O error; Kysely's
      // rollback after that failed in turn ("no transaction is active"), and its error took the place of the cause.
      if (query === 'rollback' && !sqlite.isTransaction) return NOTHING_TO_ROLL_BACK;
      // Kysely opens transactions with a deferred `begin`, which takes the write lock only at the first write: then
      // a lock conflict fails mid-transaction, where it may not be retried. `begin immediate` takes the lock first,
      // or fails having done nothing, and can be tried again. Every transaction here writes.
      const sql = query === 'begin' ? 'begin immediate' : query;
      const cached = statements.get(sql);
      if (cached) return cached;
      const adapted = watched(adaptStatement(sqlite.prepare(sql), sql), sql, sqlite, health, pending);
      if (statements.size >= 500) statements.clear();
      statements.set(sql, adapted);
      return adapted;
    },
  };
}

const NOTHING_TO_ROLL_BACK: SqliteStatement = {
  reader: false,
  all: () => [],
  run: () => ({ changes: 0, lastInsertRowid: 0 }),
  iterate: () => [][Symbol.iterator](),
};

/**
 * The statement, telling `health` of the writes that fail for want of space or for an I/O error, and of those that
 * land: a commit, or a statement outside a transaction that changed rows. A `begin`, a rollback or a statement that
 * matched nothing says nothing of whether the disk takes writes again.
 */
interface TransactionWrites {
  /** Whether a statement of the open transaction changed rows. */
  changed: boolean;
}

function watched(
  statement: SqliteStatement,
  sql: string,
  sqlite: DatabaseSync,
  health: SqliteHealth,
  pending: TransactionWrites,
): SqliteStatement {
  const commits = /^\s*commit\b/i.test(sql);
  const begins = /^\s*begin\b/i.test(sql);
  // SQLite's count of changed rows is that of the last INSERT, UPDATE or DELETE: a PRAGMA or DDL statement repeats it.
  const modifies = /^\s*(insert|update|delete|replace|with)\b/i.test(sql);
  // An INSERT … RETURNING comes back through `all`, one row for each row written.
  const returnsWrites = statement.reader && !/^\s*(select|with|pragma)\b/i.test(sql);
  return {
    reader: statement.reader,
    all: (parameters) => {
      try {
        const rows = statement.all(parameters);
        if (returnsWrites && rows.length > 0) {
          if (sqlite.isTransaction) pending.changed = true;
          else health.wrote();
        }
        return rows;
      } catch (error) {
        health.failed(error);
        throw error;
      }
    },
    run: (parameters) => {
      try {
        const result = statement.run(parameters);
        const changed = modifies && Number(result.changes) > 0;
        if (begins) pending.changed = false;
        else if (sqlite.isTransaction) pending.changed ||= changed;
        else if (commits ? pending.changed : changed) health.wrote();
        return result;
      } catch (error) {
        health.failed(error);
        throw error;
      }
    },
    iterate: statement.iterate,
  };
}

type SqliteValue = null | number | bigint | string | Uint8Array;

function adaptStatement(statement: StatementSync, sql: string): SqliteStatement {
  const columns = statement.columns().map((column) => column.name);
  // With `*` the columns are the table's at the time, and a schema change (a migration beside a running server) would
  // recompile the statement under the same text: its rows would no longer match names made once. Named columns keep
  // their places whatever the table becomes.
  if (columns.length === 0 || columns.includes('__proto__') || sql.includes('*')) {
    return {
      reader: columns.length > 0,
      all: (parameters) => statement.all(...(parameters as SqliteValue[])),
      run: (parameters) => statement.run(...(parameters as SqliteValue[])),
      iterate: (parameters) => statement.iterate(...(parameters as SqliteValue[])),
    };
  }
  // node:sqlite builds each row by adding its columns one by one, a new hidden class at every step; arrays turned into
  // objects by one literal of the statement's columns make every row of a statement one shape (0.7 of 4.5 µs on GET
  // /conversation's query, measured), and the code that reads them monomorphic.
  statement.setReturnArrays(true);
  const toRow = new Function(
    'values',
    `return { ${columns.map((name, index) => `${JSON.stringify(name)}: values[${index}]`).join(', ')} };`,
  ) as (values: unknown[]) => unknown;
  return {
    reader: true,
    all: (parameters) =>
      (statement.all(...(parameters as SqliteValue[])) as unknown as unknown[][]).map(toRow),
    run: (parameters) => statement.run(...(parameters as SqliteValue[])),
    *iterate(parameters) {
      for (const values of statement.iterate(...(parameters as SqliteValue[])))
        yield toRow(values as unknown as unknown[]);
    },
  };
}
