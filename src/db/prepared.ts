import { createHash } from 'node:crypto';
import { type Compilable, CompiledQuery } from 'kysely';

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
