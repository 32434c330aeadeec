import { sql } from 'kysely';
import { executePrepared, prepareQuery, USER_ID_SENTINEL } from './prepared.ts';
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

const USERNAME_SENTINEL = '\u0000username';
const IP_SENTINEL = '\u0000ip';
const SINCE_MS_SENTINEL = -1;
const NOW_MS_SENTINEL = -2;
const KEEP_SENTINEL = -3;

export function createKnownIpsRepository(db: Db): KnownIpsRepository {
  // A throttled login runs the first before its hash and the other two after a success: prepared once, bound per login.
  const loginSubject = prepareQuery(
    db
      .selectFrom('users')
      .leftJoin('known_ips', (join) =>
        join
          .onRef('known_ips.user_id', '=', 'users.id')
          .on('known_ips.ip', '=', IP_SENTINEL)
          .on('known_ips.last_success_at_ms', '>=', SINCE_MS_SENTINEL),
      )
      .select(['users.id', 'users.trust_generation', 'known_ips.last_success_at_ms'])
      .where('users.username_canonical', '=', USERNAME_SENTINEL),
    [IP_SENTINEL, SINCE_MS_SENTINEL, USERNAME_SENTINEL],
  );
  // Through the user row, so that a user deleted meanwhile inserts nothing instead of breaking the foreign key.
  const upsertKnownIp = prepareQuery(
    db
      .insertInto('known_ips')
      .columns(['user_id', 'ip', 'last_success_at_ms'])
      .expression((eb) =>
        eb
          .selectFrom('users')
          .select([
            'users.id',
            sql<string>`cast(${IP_SENTINEL} as text)`.as('ip'),
            sql<number>`cast(${NOW_MS_SENTINEL} as bigint)`.as('last_success_at_ms'),
          ])
          .where('users.id', '=', USER_ID_SENTINEL[0]),
      )
      .onConflict((conflict) =>
        conflict
          .columns(['user_id', 'ip'])
          .doUpdateSet({ last_success_at_ms: (eb) => eb.ref('excluded.last_success_at_ms') }),
      ),
    [IP_SENTINEL, NOW_MS_SENTINEL, USER_ID_SENTINEL[0]],
  );
  const trimKnownIps = prepareQuery(
    db
      .deleteFrom('known_ips')
      .where('user_id', '=', USER_ID_SENTINEL[0])
      .where((eb) =>
        eb.or([
          eb('last_success_at_ms', '<', SINCE_MS_SENTINEL),
          eb(
            'ip',
            'not in',
            eb
              .selectFrom('known_ips as recent')
              .select('recent.ip')
              .where('recent.user_id', '=', USER_ID_SENTINEL[0])
              .orderBy('recent.last_success_at_ms', 'desc')
              .orderBy('recent.ip')
              .limit(KEEP_SENTINEL),
          ),
        ]),
      ),
    [USER_ID_SENTINEL[0], SINCE_MS_SENTINEL, USER_ID_SENTINEL[0], KEEP_SENTINEL],
  );

  return {
    async findLoginSubject(usernameCanonical, ip, since) {
      const row = (await executePrepared(db, loginSubject(ip, since.getTime(), usernameCanonical))).rows[0];
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
        await trx.executeQuery(upsertKnownIp(ip, now.getTime(), userId));
        await trx.executeQuery(trimKnownIps(userId, since.getTime(), userId, keep));
      });
    },
  };
}
