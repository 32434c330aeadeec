import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { inject } from 'vitest';
import { type Config, loadConfig } from '../../src/config.ts';
import { createDb, type DbHandle } from '../../src/db/connect.ts';
import type { Dialect } from '../../src/db/schema.ts';

export interface CommandDatabase {
  /** The configuration an operator command is run with: this database, cheap argon2. */
  config: Config;
  /** A second connection to the same database, for the test to look. */
  open(): DbHandle;
  drop(): Promise<void>;
}

/**
 * A database of its own for an operator command, which opens it from DATABASE_URL: a SQLite file, or a new
 * PostgreSQL database (a URL cannot name a schema).
 */
export async function createCommandDatabase(dialect: Dialect, prefix = 'gh_cmd'): Promise<CommandDatabase> {
  const name = `${prefix}_${randomBytes(6).toString('hex')}`;
  let url: string;
  let drop: () => Promise<void>;
  if (dialect === 'sqlite') {
    // A directory of its own (0700), as Gatehouse wants its database: no warning about /tmp.
    const directory = mkdtempSync(join(tmpdir(), `${name}-`));
    url = `sqlite:${join(directory, 'gatehouse.db')}`;
    drop = async () => rmSync(directory, { recursive: true, force: true });
  } else {
    const adminUrl = inject('postgresUrl');
    const admin = async (query: string) => {
      const client = new pg.Client({ connectionString: adminUrl });
      await client.connect();
      try {
        await client.query(query);
      } finally {
        await client.end();
      }
    };
    await admin(`create database ${name}`);
    const parsed = new URL(adminUrl);
    parsed.pathname = `/${name}`;
    url = parsed.toString();
    drop = () => admin(`drop database if exists ${name} with (force)`);
  }
  const config = loadConfig({
    DATABASE_URL: url,
    GATEHOUSE_SECRET: randomBytes(32).toString('base64url'),
    ARGON2_MEMORY_KIB: '64',
    ARGON2_TIME_COST: '1',
  });
  return { config, open: () => createDb(config.database), drop };
}
