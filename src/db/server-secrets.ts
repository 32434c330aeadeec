import type { Db } from './schema.ts';

export interface ServerSecretsRepository {
  /** Returns the named secret, storing `candidate` first if there is none, so every instance agrees. */
  findOrInsertServerSecret(name: string, candidate: string, now: Date): Promise<string>;
}

export function createServerSecretsRepository(db: Db): ServerSecretsRepository {
  return {
    async findOrInsertServerSecret(name, candidate, now) {
      await db
        .insertInto('server_secrets')
        .values({ name, value: candidate, created_at_ms: now.getTime() })
        .onConflict((conflict) => conflict.column('name').doNothing())
        .execute();
      const row = await db
        .selectFrom('server_secrets')
        .select('value')
        .where('name', '=', name)
        .executeTakeFirstOrThrow();
      return row.value;
    },
  };
}
