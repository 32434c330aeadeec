import type { AuditEvent } from '../domain/audit-event.ts';
import type { ListedSession } from '../domain/session.ts';
import type { User } from '../domain/user.ts';

// The JSON records of accounts, sessions and audit events: what the API answers and what the gatehouse command prints
// with --json, in one shape, so that a script may read either.

/** An account as operators see it: the admin API's answers and `gatehouse users … --json`. */
export const accountRecord = (user: User) => ({
  id: user.id,
  username: user.username,
  email: user.email,
  age: user.age,
  level: user.level,
  roles: user.roles,
  disabled_at: user.disabledAt?.toISOString() ?? null,
  created_at: user.createdAt.toISOString(),
});

export const sessionRecord = (session: ListedSession) => ({
  id: session.id,
  created_at: session.createdAt.toISOString(),
  last_used_at: session.lastUsedAt.toISOString(),
  // When it ends if not used again: what a user deciding whether to sign it out wants to know.
  expires_at: session.endsAt.toISOString(),
  user_agent: session.userAgent ?? null,
  ip_address: session.ipAddress ?? null,
});

export const auditEventRecord = (event: AuditEvent) => ({
  event: event.event,
  at: event.createdAt.toISOString(),
  ip: event.ipAddress ?? null,
  user_agent: event.userAgent ?? null,
  detail: event.detail,
});

/**
 * An event as its account's user sees it (GET /users/me/activity). An operator's action on the account is shown, but as
 * an operator's: their address, user agent and identity (admin id, OS user of the command) are theirs, not the user's.
 */
export const ownActivityRecord = (event: AuditEvent) => {
  const record = auditEventRecord(event);
  if (event.detail.actor === undefined) return record;
  const { actor: _actor, actorUserId: _actorUserId, ...detail } = event.detail;
  return { ...record, ip: null, user_agent: null, detail: { ...detail, actor: 'operator' } };
};
