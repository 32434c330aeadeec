import { DatabaseSync, type SQLInputValue } from 'node:sqlite';

/**
 * The schema SQLAlchemy 1.4 writes for the reference app's models.py (read from a database that app made): no NOT
 * NULL but the id, uniqueness case-sensitive, the level a VARCHAR without a CHECK, the age a 64-bit INTEGER.
 */
export const FASTAPI_SEED_SCHEMA = [
  `CREATE TABLE users (
	id INTEGER NOT NULL, 
	username VARCHAR, 
	email VARCHAR, 
	hashed_password VARCHAR, 
	age INTEGER, 
	level VARCHAR(12), 
	PRIMARY KEY (id)
)`,
  'CREATE UNIQUE INDEX ix_users_username ON users (username)',
  'CREATE INDEX ix_users_id ON users (id)',
  'CREATE UNIQUE INDEX ix_users_email ON users (email)',
];

export interface SeedRow {
  id?: number | bigint;
  username: SQLInputValue;
  email: SQLInputValue;
  hashed_password: SQLInputValue;
  age: SQLInputValue;
  level: SQLInputValue;
}

/** Writes a SQLite file in the reference app's schema holding these rows, as SQLite stores them. */
export function writeFastapiSeedDatabase(path: string, rows: SeedRow[]): void {
  const db = new DatabaseSync(path);
  try {
    for (const statement of FASTAPI_SEED_SCHEMA) db.exec(statement);
    const insert = db.prepare(
      'INSERT INTO users (id, username, email, hashed_password, age, level) VALUES (?, ?, ?, ?, ?, ?)',
    );
    db.exec('BEGIN');
    for (const row of rows) {
      insert.run(row.id ?? null, row.username, row.email, row.hashed_password, row.age, row.level);
    }
    db.exec('COMMIT');
  } finally {
    db.close();
  }
}
