import type { AuditEventsRepository, NewAuditEvent } from '../db/audit-events.ts';
import type { AuditDetail, AuditEvent } from '../domain/audit-event.ts';
import { AppError } from '../errors.ts';
import type { Clock } from '../security/clock.ts';

/** A security event as a use case reports it, with what the request knew. */
export interface AuditRecord {
  event: string;
  fields: Readonly<Record<string, unknown>>;
  ipAddress: string | undefined;
  userAgent: string | undefined;
  requestId: string | undefined;
}

export interface ActivityPage {
  events: AuditEvent[];
  /** The cursor of the next (older) page; undefined on the last page. */
  next: string | undefined;
}

export interface AuditTrail {
  /** Queues the event for the audit table and returns at once; a write that fails is reported, never thrown. */
  record(entry: AuditRecord): void;
  /** Resolves once every event recorded before the call has been written, or given up on. */
  flush(): Promise<void>;
  /** Returns a page of the user's own events, newest first; throws validation_failed for a malformed cursor. */
  listActivity(userId: number, page: { limit: number; before: string | undefined }): Promise<ActivityPage>;
  /** Deletes the events older than the retention period; returns how many. */
  pruneExpiredEvents(): Promise<number>;
}

export interface AuditDependencies {
  auditEvents: AuditEventsRepository;
  clock: Clock;
  retentionDays: number;
  /** Told how many events were not stored and why (the database failed, or the queue was full). */
  onEventsNotStored(count: number, error: unknown): void;
}

// A field is stored only if named here with its type: what a caller adds later (a token, by mistake) stays out.
const DETAIL_FIELDS: Readonly<Record<string, 'text' | 'number'>> = {
  username: 'text',
  // A session id names a session (the owner sees it in GET /users/me/sessions); it is not a credential: using a
  // session takes its signed access token or its refresh token, and neither is ever stored here.
  sessionId: 'text',
  rule: 'text',
  reason: 'text',
  retryAfterSeconds: 'number',
  ended: 'number',
  spentForMs: 'number',
  // A mailed token's purpose (verify_email, reset_password), never the token.
  purpose: 'text',
  // Operators' actions (services/operators.ts): who acted, and on what.
  actor: 'text',
  actorUserId: 'number',
  role: 'text',
  view: 'text',
  kid: 'text',
  // Second factors: how a login passed its second leg (otp, recovery_code, webauthn), and what an operator's reset
  // removed (the app's state before, counts); never a code or a secret.
  method: 'text',
  totp: 'text',
  recoveryCodes: 'number',
  passkeys: 'number',
  // A passkey's record id (it names the passkey in /users/me/passkeys/{id}), never its credential id or public key.
  passkeyId: 'text',
};

export const MAX_DETAIL_TEXT_LENGTH = 64;
const MAX_EVENT_LENGTH = 64;
const MAX_IP_LENGTH = 64;
const MAX_USER_AGENT_LENGTH = 256;
const MAX_REQUEST_ID_LENGTH = 64;
const BATCH_SIZE = 200;
// About a minute of a login flood's events: past it, an outage drops new events (the log line keeps each one)
// rather than holding memory without bound.
const MAX_QUEUED_EVENTS = 10_000;
const PRUNE_BATCH_SIZE = 1000;
const DAY_MS = 86_400_000;

// Controls and lone surrogates: PostgreSQL refuses NUL in text, and a terminal showing the rest would obey them.
const CONTROL_CHARACTERS = /[\p{Cc}\p{Cs}]/gu;

function cleanText(value: string | undefined, maxLength: number): string | undefined {
  if (value === undefined) return undefined;
  const cleaned = value.replace(CONTROL_CHARACTERS, '');
  // By code points: a cut between the halves of a surrogate pair would leave one that PostgreSQL cannot store.
  return cleaned.length <= maxLength ? cleaned : Array.from(cleaned).slice(0, maxLength).join('');
}

/**
 * Returns the allow-listed part of an event's fields; the username only when the event names an account, since a
 * name that matches none may be a password typed into the wrong field.
 */
export function auditDetailOf(
  fields: Readonly<Record<string, unknown>>,
  { attributed }: { attributed: boolean },
): AuditDetail {
  const detail: Record<string, string | number> = {};
  for (const [name, kind] of Object.entries(DETAIL_FIELDS)) {
    const value = fields[name];
    if (name === 'username' && !attributed) continue;
    if (kind === 'text' && typeof value === 'string') {
      detail[name] = cleanText(value, MAX_DETAIL_TEXT_LENGTH) ?? '';
    } else if (kind === 'number' && typeof value === 'number' && Number.isFinite(value)) {
      detail[name] = value;
    }
  }
  return detail;
}

const CURSOR_SHAPE = /^[A-Za-z0-9_-]{1,24}$/;
const CURSOR_ID = /^[1-9][0-9]{0,15}$/;

/** Returns the opaque cursor that pages past the event with this id. */
export function encodeActivityCursor(id: number): string {
  return Buffer.from(String(id), 'latin1').toString('base64url');
}

/** Returns the event id a cursor stands for, or undefined when it is not one this service made. */
export function decodeActivityCursor(cursor: string): number | undefined {
  if (!CURSOR_SHAPE.test(cursor)) return undefined;
  const text = Buffer.from(cursor, 'base64url').toString('latin1');
  if (!CURSOR_ID.test(text)) return undefined;
  const id = Number(text);
  return Number.isSafeInteger(id) && encodeActivityCursor(id) === cursor ? id : undefined;
}

const userIdOf = (fields: Readonly<Record<string, unknown>>): number | undefined => {
  const userId = fields.userId;
  return typeof userId === 'number' && Number.isSafeInteger(userId) ? userId : undefined;
};

/**
 * Builds the audit trail: events are queued and written in small batches off the request's path, so that a slow or
 * failed database never delays or fails the use case that reported them.
 */
export function createAuditTrail(deps: AuditDependencies): AuditTrail {
  const { auditEvents, clock } = deps;
  const queue: NewAuditEvent[] = [];
  // Sequence numbers: an event is `settled` once written or given up on; flush() waits for a number.
  let recorded = 0;
  let settled = 0;
  let droppedSinceReport = 0;
  let draining = false;
  const waiters: { until: number; resolve: () => void }[] = [];

  const settle = (count: number) => {
    settled += count;
    for (let i = waiters.length - 1; i >= 0; i -= 1) {
      const waiter = waiters[i];
      if (waiter && waiter.until <= settled) {
        waiters.splice(i, 1);
        waiter.resolve();
      }
    }
  };

  const drain = async () => {
    while (queue.length > 0) {
      const batch = queue.splice(0, BATCH_SIZE);
      try {
        await auditEvents.insertAuditEvents(batch);
      } catch (error) {
        deps.onEventsNotStored(batch.length, error);
      }
      settle(batch.length);
    }
    if (droppedSinceReport > 0) {
      deps.onEventsNotStored(droppedSinceReport, new Error('audit queue full'));
      droppedSinceReport = 0;
    }
    draining = false;
  };

  const flush = () => {
    const until = recorded;
    if (settled >= until) return Promise.resolve();
    return new Promise<void>((resolve) => waiters.push({ until, resolve }));
  };

  return {
    record({ event, fields, ipAddress, userAgent, requestId }) {
      recorded += 1;
      if (queue.length >= MAX_QUEUED_EVENTS) {
        droppedSinceReport += 1;
        settle(1);
        return;
      }
      const userId = userIdOf(fields);
      queue.push({
        event: cleanText(event, MAX_EVENT_LENGTH) ?? '',
        userId,
        ipAddress: cleanText(ipAddress, MAX_IP_LENGTH),
        userAgent: cleanText(userAgent, MAX_USER_AGENT_LENGTH),
        requestId: cleanText(requestId, MAX_REQUEST_ID_LENGTH),
        createdAt: clock.now(),
        detail: auditDetailOf(fields, { attributed: userId !== undefined }),
      });
      if (!draining) {
        draining = true;
        // After the current turn of the event loop, so that the events of one request (or of many at once) share
        // one INSERT.
        setImmediate(() => void drain());
      }
    },

    flush,

    async listActivity(userId, { limit, before }) {
      const beforeId = before === undefined ? undefined : decodeActivityCursor(before);
      if (before !== undefined && beforeId === undefined) {
        throw new AppError('validation_failed', 'Invalid cursor', {
          details: [{ loc: ['query', 'before'], msg: 'Invalid cursor', type: 'value_error' }],
        });
      }
      // What this user's own request just did (a logout, then a look at the activity) is on the page.
      await flush();
      const found = await auditEvents.findAuditEventsOfUser(userId, { limit: limit + 1, beforeId });
      const events = found.slice(0, limit);
      const last = events.at(-1);
      return { events, next: found.length > limit && last ? encodeActivityCursor(last.id) : undefined };
    },

    async pruneExpiredEvents() {
      const cutoff = new Date(clock.now().getTime() - deps.retentionDays * DAY_MS);
      let pruned = 0;
      for (;;) {
        const deleted = await auditEvents.deleteAuditEventsCreatedBefore(cutoff, PRUNE_BATCH_SIZE);
        pruned += deleted;
        if (deleted < PRUNE_BATCH_SIZE) return pruned;
      }
    },
  };
}
