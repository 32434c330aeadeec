import { sql } from 'kysely';
import type { Db } from './schema.ts';

/** Who a login names, before its password is checked: the account, and whether it knows the client's address. */
export interface LoginSubject {
  userId: number;
  /** The user's trust generation, which their device tokens must carry. */
  trustGeneration: number;
  /** The last success from this address since the cut-off; undefined when there was none. */
  ipLastSuccessAt: Date | undefined;
}

export interface KnownIpsRepository {
  /** The user with this canonical username and their last success from `ip` since `since`; undefined for no user. */
  findLoginSubject(usernameCanonical: string, ip: string, since: Date): Promise<LoginSubject | undefined>;
  /**
   * Records a success from `ip`, then keeps only the user's `keep` most recent addresses used since `since`. Does
   * nothing when the user is gone.
   */
  recordKnownIp(userId: number, ip: string, now: Date, keep: number, since: Date): Promise<void>;
}

export function createKnownIpsRepository(db: Db): KnownIpsRepository {
  return {
    async findLoginSubject(usernameCanonical, ip, since) {
      const row = await db
        .selectFrom('users')
        .leftJoin('known_ips', (join) =>
          join
            .onRef('known_ips.user_id', '=', 'users.id')
            .on('known_ips.ip', '=', ip)
            .on('known_ips.last_success_at_ms', '>=', since.getTime()),
        )
        .select(['users.id', 'users.trust_generation', 'known_ips.last_success_at_ms'])
        .where('users.username_canonical', '=', usernameCanonical)
        .executeTakeFirst();
      if (!row) return undefined;
      const lastMs = row.last_success_at_ms;
      return {
        userId: Number(row.id),
        trustGeneration: Number(row.trust_generation),
        ipLastSuccessAt: lastMs === null ? undefined : new Date(Number(lastMs)),
      };
    },

    async recordKnownIp(userId, ip, now, keep, since) {
      await db.transaction().execute(async (trx) => {
        // Through the user row, so that a user deleted meanwhile inserts nothing instead of breaking the foreign key.
        await trx
          .insertInto('known_ips')
          .columns(['user_id', 'ip', 'last_success_at_ms'])
          .expression((eb) =>
            eb
              .selectFrom('users')
              .select([
                'users.id',
                sql<string>`cast(${ip} as text)`.as('ip'),
                sql<number>`cast(${now.getTime()} as bigint)`.as('last_success_at_ms'),
              ])
              .where('users.id', '=', userId),
          )
          .onConflict((conflict) =>
            conflict
              .columns(['user_id', 'ip'])
              .doUpdateSet({ last_success_at_ms: (eb) => eb.ref('excluded.last_success_at_ms') }),
          )
          .execute();
        await trx
          .deleteFrom('known_ips')
          .where('user_id', '=', userId)
          .where((eb) =>
            eb.or([
              eb('last_success_at_ms', '<', since.getTime()),
              eb(
                'ip',
                'not in',
                eb
                  .selectFrom('known_ips as recent')
                  .select('recent.ip')
                  .where('recent.user_id', '=', userId)
                  .orderBy('recent.last_success_at_ms', 'desc')
                  .orderBy('recent.ip')
                  .limit(keep),
              ),
            ]),
          )
          .execute();
      });
    },
  };
}
