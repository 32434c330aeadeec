import { statSync } from 'node:fs';
import { DatabaseSync, type SQLOutputValue } from 'node:sqlite';

/** A column as SQLite holds it: the seed's schema constrains none of them but the id (integers read as bigint). */
export type SeedValue = SQLOutputValue;

/** A row of the FastAPI seed's `users` table, as stored. */
export interface FastapiSeedUser {
  id: bigint;
  username: SeedValue;
  email: SeedValue;
  hashedPassword: SeedValue;
  age: SeedValue;
  level: SeedValue;
}

export interface FastapiSeedDatabase {
  /** How many users the file holds. */
  count: number;
  /** The largest id not above `limit`, or undefined when there is none. */
  maxIdUpTo(limit: number): number | undefined;
  /** The users in id order, read as the iteration goes. */
  users(): IterableIterator<FastapiSeedUser>;
  close(): void;
}

/** The file cannot be read, or it is not a database the seed's FastAPI app wrote. */
export class SeedDatabaseError extends Error {
  override name = 'SeedDatabaseError';
}

// models.py's User; SQLAlchemy adds nothing, and the app never migrated it.
const SEED_COLUMNS = ['id', 'username', 'email', 'hashed_password', 'age', 'level'];

/** Opens the SQLite file of the FastAPI seed read-only, and checks that it has the seed's `users` table. */
export function openFastapiSeedDatabase(path: string): FastapiSeedDatabase {
  let isFile: boolean;
  try {
    isFile = statSync(path).isFile();
  } catch (error) {
    throw new SeedDatabaseError(`cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? error}`);
  }
  if (!isFile) throw new SeedDatabaseError(`cannot read ${path}: it is a directory or a device, not a file`);
  let db: DatabaseSync;
  try {
    db = new DatabaseSync(path, { readOnly: true });
  } catch (error) {
    throw new SeedDatabaseError(`cannot read ${path}: ${(error as Error).message}`);
  }
  try {
    let columns: string[];
    try {
      columns = db
        .prepare("select name from pragma_table_info('users')")
        .all()
        .map((column) => String(column.name));
    } catch (error) {
      throw new SeedDatabaseError(`${path} is not a SQLite database (${(error as Error).message})`);
    }
    if (columns.length === 0) {
      throw new SeedDatabaseError(`${path} is not a FastAPI seed database: it has no users table`);
    }
    const missing = SEED_COLUMNS.filter((name) => !columns.includes(name));
    if (missing.length > 0) {
      throw new SeedDatabaseError(
        `${path} is not a FastAPI seed database: its users table has no ${missing.join(', ')} column`,
      );
    }
    const count = Number(db.prepare('select count(*) as count from users').get()?.count);
    return {
      count,
      maxIdUpTo(limit) {
        const max = db.prepare('select max(id) as max from users where id <= ?').get(limit)?.max;
        return max === null || max === undefined ? undefined : Number(max);
      },
      *users() {
        const statement = db.prepare(
          'select id, username, email, hashed_password, age, level from users order by id',
        );
        // An age or id past 2^53 must reach the rules as it is, not rounded into range.
        statement.setReadBigInts(true);
        for (const row of statement.iterate()) {
          yield {
            id: row.id as bigint,
            username: row.username ?? null,
            email: row.email ?? null,
            hashedPassword: row.hashed_password ?? null,
            age: row.age ?? null,
            level: row.level ?? null,
          };
        }
      },
      close: () => db.close(),
    };
  } catch (error) {
    db.close();
    throw error;
  }
}
