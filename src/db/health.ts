import { sql } from 'kysely';
import type { Db } from './schema.ts';

/** Resolves when the database answers a trivial query; rejects otherwise (service_unavailable for an outage). */
export async function pingDatabase(db: Db): Promise<void> {
  await sql`select 1`.execute(db);
}
