import type { Config } from '../config.ts';
import { createAuditEventsRepository } from '../db/audit-events.ts';
import { createCounterStore } from '../db/counters.ts';
import { createMfaRepository } from '../db/mfa.ts';
import { createPasskeysRepository } from '../db/passkeys.ts';
import { createSessionsRepository } from '../db/sessions.ts';
import { createSigningKeysRepository } from '../db/signing-keys.ts';
import { createUsersRepository } from '../db/users.ts';
import { systemClock } from '../security/clock.ts';
import { createSecretBox } from '../security/secret-box.ts';
import { createAuditTrail } from '../services/audit.ts';
import { createMailComposer } from '../services/mail.ts';
import {
  type AccountFailures,
  createOperatorService,
  type OperatorContext,
  type OperatorService,
} from '../services/operators.ts';
import { createThrottle, throttleKeysOf } from '../services/throttle.ts';
import { openDatabase } from './open-database.ts';
import type { CommandIo } from './output.ts';

export interface OperatorSession {
  operators: OperatorService;
  context: OperatorContext;
  /** Whether the shared counter store failed to answer during the command (its counts were then not reached). */
  countersFailed(): boolean;
}

/**
 * Opens the database, runs `use` with the operator service and a context that names the OS user as the actor, then
 * writes the audit events it recorded and closes everything. `counters` reaches the throttling counters: only Redis
 * holds them where a command can; without it they live in each server's memory.
 */
export async function withOperatorService<T>(
  config: Config,
  io: CommandIo,
  options: { counters: boolean },
  use: (session: OperatorSession) => Promise<T>,
): Promise<T> {
  const { handle } = await openDatabase(config, (line) => io.warn(`warning: ${line}`), { existing: true });
  let failed = false;
  const counters =
    options.counters && config.throttling.enabled && config.redis
      ? createCounterStore({
          redis: config.redis,
          onStoreStateChange: (state) => {
            if (state === 'unreachable') failed = true;
          },
        })
      : undefined;
  if (counters && !(await counters.ready())) failed = true;
  const accountFailures: AccountFailures = !config.throttling.enabled
    ? { kind: 'off' }
    : counters && !failed
      ? {
          kind: 'reachable',
          throttle: createThrottle(counters, config.throttling, throttleKeysOf(config.secrets)),
        }
      : { kind: 'unreachable' };
  const auditTrail = createAuditTrail({
    auditEvents: createAuditEventsRepository(handle.db),
    clock: systemClock,
    retentionDays: config.auditRetentionDays,
    onEventsNotStored: (count, error) =>
      io.warn(`warning: ${count} audit event(s) not stored: ${(error as Error).message}`),
  });
  const operators = createOperatorService({
    users: createUsersRepository(handle.db),
    sessions: createSessionsRepository(handle.db, handle.dialect),
    signingKeys: createSigningKeysRepository(handle.db),
    box: createSecretBox(config.secrets),
    secondFactors: {
      mfa: createMfaRepository(handle.db),
      mail: createMailComposer(createSecretBox(config.secrets)),
      passkeys: createPasskeysRepository(handle.db),
    },
    auditTrail,
    accountFailures,
    clock: systemClock,
    policy: { idleTtlSeconds: config.sessions.idleTtlSeconds },
  });
  const context: OperatorContext = {
    actor: { kind: 'cli', osUser: io.osUser },
    audit: (event, fields) =>
      auditTrail.record({ event, fields, ipAddress: undefined, userAgent: undefined, requestId: undefined }),
  };
  try {
    return await use({ operators, context, countersFailed: () => failed });
  } finally {
    await auditTrail.flush();
    await counters?.close();
    await handle.close();
  }
}
