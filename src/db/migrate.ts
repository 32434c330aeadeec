import { type Kysely, type Migration, type MigrationProvider, Migrator } from 'kysely';
import { AppError } from '../errors.ts';
import * as createCoreTables from './migrations/2026_11_25_2100_create_core_tables.ts';
import * as createSessions from './migrations/2026_11_25_2200_create_sessions.ts';
import * as addUsernameSkeleton from './migrations/2026_11_27_1000_add_username_skeleton.ts';
import * as forgetStoredRefreshKey from './migrations/2026_11_30_0900_forget_stored_refresh_key.ts';
import * as createAuditEvents from './migrations/2026_12_01_0900_create_audit_events.ts';
import * as createKnownIps from './migrations/2026_12_01_1000_create_known_ips.ts';
import * as addTrustGeneration from './migrations/2026_12_03_1900_add_trust_generation.ts';
import * as addRolesAndDisabled from './migrations/2026_12_04_1000_add_roles_and_disabled.ts';
import * as addSessionScope from './migrations/2026_12_05_0900_add_session_scope.ts';
import * as addEmailFlows from './migrations/2026_12_06_0900_add_email_flows.ts';
import * as addSecondFactors from './migrations/2026_12_08_0900_add_second_factors.ts';
import * as addPasskeys from './migrations/2026_12_09_0900_add_passkeys.ts';
import * as foldCapitalSharpS from './migrations/2026_12_10_0900_fold_capital_sharp_s.ts';
import * as outboxFollowsItsUser from './migrations/2026_12_11_0900_outbox_follows_its_user.ts';
import * as addReadinessProbe from './migrations/2026_12_12_0900_add_readiness_probe.ts';
import * as forgetMailsOfDeletedAccounts from './migrations/2026_12_13_0900_forget_mails_of_deleted_accounts.ts';
import * as forgetMailServersRefusals from './migrations/2026_12_14_0900_forget_mail_servers_refusals.ts';

// An explicit list rather than a folder scan: the order is reviewed, and nothing depends on the cwd.
const migrations: Record<string, Migration> = {
  '2026_11_25_2100_create_core_tables': createCoreTables,
  '2026_11_25_2200_create_sessions': createSessions,
  '2026_11_27_1000_add_username_skeleton': addUsernameSkeleton,
  '2026_11_30_0900_forget_stored_refresh_key': forgetStoredRefreshKey,
  '2026_12_01_0900_create_audit_events': createAuditEvents,
  '2026_12_01_1000_create_known_ips': createKnownIps,
  '2026_12_03_1900_add_trust_generation': addTrustGeneration,
  '2026_12_04_1000_add_roles_and_disabled': addRolesAndDisabled,
  '2026_12_05_0900_add_session_scope': addSessionScope,
  '2026_12_06_0900_add_email_flows': addEmailFlows,
  '2026_12_08_0900_add_second_factors': addSecondFactors,
  '2026_12_09_0900_add_passkeys': addPasskeys,
  '2026_12_10_0900_fold_capital_sharp_s': foldCapitalSharpS,
  '2026_12_11_0900_outbox_follows_its_user': outboxFollowsItsUser,
  '2026_12_12_0900_add_readiness_probe': addReadinessProbe,
  '2026_12_13_0900_forget_mails_of_deleted_accounts': forgetMailsOfDeletedAccounts,
  '2026_12_14_0900_forget_mail_servers_refusals': forgetMailServersRefusals,
};

const provider: MigrationProvider = { getMigrations: async () => migrations };

/** Whether any migration ever ran on this database: whether it is a Gatehouse database at all. Changes nothing. */
export async function hasBeenMigrated(handle: {
  // biome-ignore lint/suspicious/noExplicitAny: the migrator works on any schema.
  db: Kysely<any>;
  schema: string | undefined;
}): Promise<boolean> {
  const migrator = new Migrator({
    db: handle.db,
    provider,
    ...(handle.schema ? { migrationTableSchema: handle.schema } : {}),
  });
  return (await migrator.getMigrations()).some((migration) => migration.executedAt !== undefined);
}

/** Applies every pending migration; returns the names applied, or throws when one fails. */
export async function migrateToLatest(handle: {
  // biome-ignore lint/suspicious/noExplicitAny: the migrator works on any schema.
  db: Kysely<any>;
  schema: string | undefined;
}): Promise<string[]> {
  // Named explicitly: otherwise Kysely takes a kysely_migration table in any other schema for its own.
  const migrator = new Migrator({
    db: handle.db,
    provider,
    ...(handle.schema ? { migrationTableSchema: handle.schema } : {}),
  });
  // Kysely locks migrations on PostgreSQL but not across SQLite processes: when instances start together on a
  // fresh file, the loser's transaction rolls back, and a retry finds the migrations applied.
  for (let attempt = 1; ; attempt += 1) {
    const { error, results } = await migrator.migrateToLatest();
    if (!error) {
      return (results ?? [])
        .filter((result) => result.status === 'Success')
        .map((result) => result.migrationName);
    }
    // Kysely calls it "corrupted": an operator rolling back would take the database for damaged, where it is newer.
    const unknown = /previously executed migration (\S+) is missing/.exec(
      error instanceof Error ? error.message : '',
    )?.[1];
    if (unknown !== undefined) {
      throw new AppError(
        'internal',
        `the database was migrated by a newer version of Gatehouse (${unknown}), which this one does not know: ` +
          'run that version or a later one; going back to this one needs a backup taken before the upgrade',
      );
    }
    if (attempt >= 5 || handle.schema !== undefined) {
      throw new AppError('internal', 'database migration failed', { cause: error });
    }
    await new Promise((resolve) => setTimeout(resolve, 100 * attempt));
  }
}
