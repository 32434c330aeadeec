import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMfaRepository } from '../../src/db/mfa.ts';
import { createPasskeysRepository } from '../../src/db/passkeys.ts';
import { createSessionsRepository } from '../../src/db/sessions.ts';
import { createUsersRepository, lockForSession } from '../../src/db/users.ts';
import { createTestClock } from '../support/clock.ts';
import { createTestDatabase, dialects, type TestDatabase } from '../support/dialects.ts';
import { insertLiveSession, newUser } from '../support/new-user.ts';

// Found in review: on PostgreSQL (READ COMMITTED) a write guarded in one statement by "the account enabled and the
// session live" waited for the user's row held by a password change that ended the session, then re-checked only the
// new users row: the session was judged on the statement's old snapshot, still live, and the write landed.
describe.runIf(dialects.includes('postgres'))(
  'a write for a session that a password change ends meanwhile (postgres)',
  () => {
    let database: TestDatabase;
    const clock = createTestClock();
    beforeAll(async () => {
      database = await createTestDatabase('postgres');
    });
    afterAll(async () => {
      await database.destroy();
    });

    async function userWithTwoSessions(name: string) {
      const users = createUsersRepository(database.db);
      const user = await users.insertUserWithConversation(
        newUser(name, {
          usernameCanonical: name,
          usernameSkeleton: name,
          emailCanonical: `${name}@example.com`,
          passwordHash: 'old-hash',
        }),
        'welcome',
        clock.now(),
      );
      const nowMs = clock.now().getTime();
      for (const id of [`${name}-owner`, `${name}-thief`])
        await insertLiveSession(database.db, id, user.id, nowMs);
      return { user, owner: `${name}-owner`, thief: `${name}-thief` };
    }

    /** Runs `guarded` while a password change of the owner (hash swapped, thief's session ended) holds the users row. */
    async function raceWithPasswordChange(userId: number, thief: string, guarded: () => Promise<unknown>) {
      let commit!: () => void;
      const gate = new Promise<void>((resolve) => {
        commit = resolve;
      });
      let locked!: () => void;
      const holding = new Promise<void>((resolve) => {
        locked = resolve;
      });
      const passwordChange = database.db.transaction().execute(async (trx) => {
        await trx.updateTable('users').set({ password_hash: 'new-hash' }).where('id', '=', userId).execute();
        await trx
          .updateTable('sessions')
          .set({ revoked_at_ms: clock.now().getTime(), revoked_reason: 'password_changed' })
          .where('user_id', '=', userId)
          .where('id', '=', thief)
          .execute();
        locked();
        await gate;
      });
      await holding;
      const write = guarded().then(
        (value) => ({ ok: true as const, value }),
        (error: unknown) => ({ ok: false as const, error }),
      );
      // Wait until the guarded statement is waiting for the users row lock.
      for (let i = 0; i < 200; i += 1) {
        const { rows } = await sql<{ n: number }>`
        select count(*)::int as n from pg_stat_activity
        where wait_event_type = 'Lock' and query ilike '%update "users"%' and datname = current_database()`.execute(
          database.db,
        );
        if ((rows[0]?.n ?? 0) > 0) break;
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      commit();
      await passwordChange;
      return write;
    }

    it('refuses new recovery codes for a session the password change ended: invalid_token, none stored', async () => {
      const { user, thief } = await userWithTwoSessions(`rc${Date.now()}`);
      const mfa = createMfaRepository(database.db);
      const outcome = await raceWithPasswordChange(user.id, thief, () =>
        mfa.replaceRecoveryCodes(user.id, ['thief-code-hash'], [], clock.now(), thief),
      );
      const stored = await database.db
        .selectFrom('recovery_codes')
        .select('code_hash')
        .where('user_id', '=', user.id)
        .execute();
      const session = await database.db
        .selectFrom('sessions')
        .select('revoked_at_ms')
        .where('id', '=', thief)
        .executeTakeFirstOrThrow();
      expect(session.revoked_at_ms).not.toBeNull();
      expect(outcome.ok).toBe(false);
      expect(stored).toEqual([]);
    });

    it('refuses a passkey removal for a session the password change ended: invalid_token, the passkey kept', async () => {
      const { user, thief } = await userWithTwoSessions(`pk${Date.now()}`);
      const nowMs = clock.now().getTime();
      await database.db
        .insertInto('webauthn_credentials')
        .values({
          id: 'pk1',
          user_id: user.id,
          credential_id: `cred-${user.id}`,
          public_key: 'x',
          sign_count: 0,
          transports: '',
          aaguid: '00000000-0000-0000-0000-000000000000',
          backup_eligible: 0,
          backup_state: 0,
          uv_initialized: 1,
          suspect: 0,
          name: 'Owner key',
          created_at_ms: nowMs,
          last_used_at_ms: null,
        } as never)
        .execute();
      const passkeys = createPasskeysRepository(database.db);
      const outcome = await raceWithPasswordChange(user.id, thief, () =>
        passkeys.deletePasskey(user.id, 'pk1', [], clock.now(), thief),
      );
      const left = await database.db
        .selectFrom('webauthn_credentials')
        .select('id')
        .where('user_id', '=', user.id)
        .execute();
      expect(outcome.ok).toBe(false);
      expect(left).toEqual([{ id: 'pk1' }]);
    });

    it('refuses the same write once the password change has committed', async () => {
      const { user, thief } = await userWithTwoSessions(`ctl${Date.now()}`);
      await database.db
        .updateTable('sessions')
        .set({ revoked_at_ms: clock.now().getTime(), revoked_reason: 'password_changed' })
        .where('id', '=', thief)
        .execute();
      const mfa = createMfaRepository(database.db);
      await expect(
        mfa.replaceRecoveryCodes(user.id, ['thief-code-hash'], [], clock.now(), thief),
      ).rejects.toMatchObject({ code: 'invalid_token' });
    });

    it('refuses a factor change of the session a real password change ends while it waits', async () => {
      const { user, owner, thief } = await userWithTwoSessions(`real${Date.now()}`);
      const users = createUsersRepository(database.db);
      const mfa = createMfaRepository(database.db);
      const waiters = async () =>
        (
          await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity
          where wait_event_type = 'Lock' and datname = current_database()`.execute(database.db)
        ).rows[0]?.n ?? 0;
      const until = async (n: number) => {
        for (let i = 0; i < 300 && (await waiters()) < n; i += 1) await new Promise((r) => setTimeout(r, 10));
      };
      // C: the thief's own refresh holds its session row (markRefreshTokenUsed takes FOR NO KEY UPDATE), a moment.
      let release!: () => void;
      const released = new Promise<void>((resolve) => {
        release = resolve;
      });
      let held!: () => void;
      const holding = new Promise<void>((resolve) => {
        held = resolve;
      });
      const refresh = database.db.transaction().execute(async (trx) => {
        await sql`select id from sessions where id = ${thief} for no key update`.execute(trx);
        held();
        await released;
      });
      await holding;
      // B: the owner's password change: swaps the hash (users row locked), then waits to revoke the thief's session.
      const change = users.replacePasswordHashEndingOtherSessions(
        user.id,
        'old-hash',
        'new-hash',
        owner,
        clock.now(),
      );
      await until(1);
      // A: the thief's recovery-code regeneration, past its password check, reaches its write.
      const regenerate = mfa.replaceRecoveryCodes(user.id, ['thief-code-hash'], [], clock.now(), thief).then(
        () => 'landed',
        (error: { code?: string }) => `refused ${error.code}`,
      );
      await until(2);
      release();
      await refresh;
      expect(await change).toBe(true);
      const outcome = await regenerate;
      const session = await database.db
        .selectFrom('sessions')
        .select('revoked_reason')
        .where('id', '=', thief)
        .executeTakeFirstOrThrow();
      expect(session.revoked_reason).toBe('password_changed');
      expect(outcome).toBe('refused invalid_token');
    });

    it('makes a logout of the session wait for a write it let through, rather than answer before the write lands', async () => {
      const { user, thief } = await userWithTwoSessions(`lo${Date.now()}`);
      let proceed!: () => void;
      const gate = new Promise<void>((resolve) => {
        proceed = resolve;
      });
      let checked!: () => void;
      const afterCheck = new Promise<void>((resolve) => {
        checked = resolve;
      });
      const change = database.db.transaction().execute(async (trx) => {
        await lockForSession(trx, user.id, thief);
        checked();
        await gate;
        await trx
          .insertInto('recovery_codes')
          .values({ user_id: user.id, code_hash: 'late', created_at_ms: 0 } as never)
          .execute();
      });
      await afterCheck;
      const sessions = createSessionsRepository(database.db, 'postgres');
      let answered = false;
      const logout = sessions.revokeSession(thief, 'logout', clock.now()).then((revoked) => {
        answered = true;
        return revoked;
      });
      const waitingLogouts = async () =>
        (
          await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity
            where wait_event_type = 'Lock' and query ilike '%update "sessions"%'
            and datname = current_database()`.execute(database.db)
        ).rows[0]?.n ?? 0;
      let waiting = 0;
      for (let polls = 0; polls < 300 && !answered && waiting === 0; polls += 1) {
        waiting = await waitingLogouts();
        if (waiting === 0) await new Promise((resolve) => setTimeout(resolve, 10));
      }
      expect(answered).toBe(false);
      expect(waiting).toBeGreaterThan(0);
      proceed();
      await change;
      // Then it ends the session, after the write it waited for.
      expect(await logout).toBe(true);
    });

    it('refuses a passkey registration for a session the password change ended: user_gone', async () => {
      const { user, thief } = await userWithTwoSessions(`reg${Date.now()}`);
      const passkeys = createPasskeysRepository(database.db);
      const outcome = await raceWithPasswordChange(user.id, thief, () =>
        passkeys.insertPasskey(
          {
            id: 'thiefkey',
            userId: user.id,
            credentialId: `thief-cred-${user.id}`,
            publicKey: 'x',
            signCount: 0,
            transports: [],
            aaguid: '00000000-0000-0000-0000-000000000000',
            backupEligible: true,
            backupState: true,
            uvInitialized: true,
            name: 'Thief',
          },
          10,
          [],
          clock.now(),
          thief,
        ),
      );
      expect(outcome).toEqual({ ok: true, value: 'user_gone' });
    });
  },
);
