import { createHash } from 'node:crypto';
import { type Compilable, CompiledQuery, type Kysely, type RawBuilder, type SqlBool, sql } from 'kysely';
import type { Dialect } from './schema.ts';

/** Placeholder for a user id in prepared queries, bound per request. */
export const USER_ID_SENTINEL: [number] = [-0x5e471];

/** SQL texts of prepared queries, by the statement name PostgreSQL connections prepare them under. */
export const preparedStatementNames = new Map<string, string>();

/**
 * Compiles a query once, with sentinel values where the parameters go, and returns a binder that reuses its SQL
 * text: the per-request cost of building and compiling a Kysely query disappears from hot paths, and SQLite's
 * statement cache sees one SQL string.
 */
export function prepareQuery<Row, Params extends unknown[]>(
  query: Compilable<Row>,
  sentinels: [...Params],
): (...params: Params) => CompiledQuery<Row> {
  const compiled = query.compile();
  if (
    compiled.parameters.length !== sentinels.length ||
    compiled.parameters.some((value, index) => value !== sentinels[index])
  ) {
    throw new Error(`prepared query parameters out of order: ${compiled.sql}`);
  }
  preparedStatementNames.set(
    compiled.sql,
    `gh_${createHash('sha256').update(compiled.sql).digest('hex').slice(0, 16)}`,
  );
  return (...params) => CompiledQuery.raw(compiled.sql, params) as CompiledQuery<Row>;
}

/** Runs a read at once when the database can (see registerDirectReader); undefined to go through Kysely instead. */
export type DirectReader = (query: CompiledQuery) => unknown[] | undefined;

const directReaders = new WeakMap<Kysely<never>, DirectReader>();

/** Lets executePrepared run reads on this database without Kysely's driver (connect.ts does it for SQLite). */
export function registerDirectReader<DB>(db: Kysely<DB>, reader: DirectReader): void {
  directReaders.set(db as unknown as Kysely<never>, reader);
}

/**
 * Executes a prepared read. On SQLite, while no transaction is open on its one connection, the statement runs at
 * once: Kysely's driver would take its connection lock, go through a chain of promises and translate errors, about a
 * fifth of GET /conversation's database time (measured). Anything else, an error included, goes through Kysely.
 */
export async function executePrepared<DB, Row>(
  db: Kysely<DB>,
  query: CompiledQuery<Row>,
): Promise<{ rows: Row[] }> {
  const rows = directReaders.get(db as unknown as Kysely<never>)?.(query);
  return rows ? { rows: rows as Row[] } : db.executeQuery(query);
}

/** Placeholder for the list of keys a batched read binds, in the form keyIn's condition takes it. */
export const KEYS_SENTINEL: [readonly (string | number)[] | string] = [['\u0000keys']];

/**
 * The condition of a batched read, `column` among a list bound as one parameter (KEYS_SENTINEL in the prepared
 * query), and how to bind the list: an array for PostgreSQL's `= any($1)`, JSON text for SQLite's json_each, the
 * one form in which SQLite takes a list of any length in a single parameter. Both search an index on the column once
 * per key (EXPLAIN, on 300,000 sessions).
 */
export function keyIn(
  dialect: Dialect,
  column: string,
): {
  condition: RawBuilder<SqlBool>;
  bind: (keys: readonly (string | number)[]) => readonly (string | number)[] | string;
} {
  return dialect === 'postgres'
    ? { condition: sql<SqlBool>`${sql.ref(column)} = any(${KEYS_SENTINEL[0]})`, bind: (keys) => keys }
    : {
        condition: sql<SqlBool>`${sql.ref(column)} in (select value from json_each(${KEYS_SENTINEL[0]}))`,
        bind: (keys) => JSON.stringify(keys),
      };
}

interface Waiter<Row> {
  resolve: (rows: Row[]) => void;
  reject: (error: unknown) => void;
}

/**
 * Gathers the reads by key that requests make in one turn of the event loop into one statement (`read` with all
 * their keys, at most `maxKeys` at a time), and gives each caller the rows of its key. Much of a statement's cost
 * does not grow with its keys: on PostgreSQL a round trip, a pooled connection and the driver's work, on SQLite the
 * read lock's system calls and the statement's setup; under load most of it is shared (GET /conversation with 64
 * sessions: 16k to 24k req/s on SQLite, 5.5k to 11k on PostgreSQL, measured). A read never reuses an answer: its
 * statement goes out after the request arrived, so it sees every write committed before that, and revocation stays
 * immediate.
 */
export function batchedReads<Key, Row>(
  read: (keys: Key[]) => Promise<Row[]>,
  keyOf: (row: Row) => Key,
  maxKeys = 100,
): (key: Key) => Promise<Row[]> {
  if (!Number.isInteger(maxKeys) || maxKeys < 1)
    throw new Error(`batchedReads: maxKeys must be a positive integer`);
  let gathering: Map<Key, Waiter<Row>[]> | undefined;

  const run = async (keys: Key[], waiters: Map<Key, Waiter<Row>[]>) => {
    try {
      const byKey = new Map<Key, Row[]>();
      for (const row of await read(keys)) {
        const key = keyOf(row);
        const rows = byKey.get(key);
        if (rows) rows.push(row);
        else byKey.set(key, [row]);
      }
      for (const key of keys)
        for (const waiter of waiters.get(key) ?? []) waiter.resolve(byKey.get(key) ?? []);
    } catch (error) {
      for (const key of keys) for (const waiter of waiters.get(key) ?? []) waiter.reject(error);
    }
  };

  const flush = (waiters: Map<Key, Waiter<Row>[]>) => {
    gathering = undefined;
    const keys = [...waiters.keys()];
    for (let start = 0; start < keys.length; start += maxKeys)
      void run(keys.slice(start, start + maxKeys), waiters);
  };

  return (key) =>
    new Promise<Row[]>((resolve, reject) => {
      if (!gathering) {
        const waiters = new Map<Key, Waiter<Row>[]>();
        gathering = waiters;
        // After the poll phase: every request whose bytes arrived in this turn has asked by then.
        setImmediate(flush, waiters);
      }
      const waiters = gathering.get(key);
      if (waiters) waiters.push({ resolve, reject });
      else gathering.set(key, [{ resolve, reject }]);
    });
}
