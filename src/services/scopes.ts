import { SCOPES, type Scope } from '../domain/scope.ts';
import type { User } from '../domain/user.ts';
import { AppError } from '../errors.ts';

/** What a token grants when the client asks for nothing in particular: never `admin`, which must be asked for. */
export const DEFAULT_SCOPES: ReadonlySet<Scope> = new Set(['conversation:read', 'conversation:write']);

// Tokens issued before scopes were split said `conversation`; they, and clients that echo it back, keep working.
const LEGACY_CONVERSATION = 'conversation';
const LEGACY_EXPANSION: readonly Scope[] = ['conversation:read', 'conversation:write'];

const isScope = (name: string): name is Scope => (SCOPES as readonly string[]).includes(name);

const invalidScope = (message: string) => new AppError('invalid_scope', message);

/**
 * Returns the scopes a `/token` request asks for, or undefined when it asks for none (omitted or empty, RFC 6749
 * §3.2); throws invalid_scope for a name this service does not know.
 */
export function parseRequestedScope(raw: string | undefined): ReadonlySet<Scope> | undefined {
  // RFC 6749 §3.3: space-delimited, case-sensitive names; the order does not matter.
  const names = (raw ?? '').split(' ').filter(Boolean);
  if (names.length === 0) return undefined;
  const requested = new Set<Scope>();
  for (const name of names) {
    if (name === LEGACY_CONVERSATION) for (const scope of LEGACY_EXPANSION) requested.add(scope);
    else if (isScope(name)) requested.add(name);
    else throw invalidScope('The requested scope is unknown or malformed');
  }
  return requested;
}

/** Returns every scope the user may hold now: `admin` only with the admin role. */
export function scopesPermittedTo(user: Pick<User, 'roles'>): ReadonlySet<Scope> {
  return new Set(SCOPES.filter((scope) => scope !== 'admin' || user.roles.includes('admin')));
}

/**
 * Returns the scopes to grant: those requested, or `fallback` limited to `ceiling` when none were; throws
 * invalid_scope when the request reaches beyond `ceiling` or nothing would be granted.
 */
export function grantScopes(
  requested: ReadonlySet<Scope> | undefined,
  ceiling: ReadonlySet<Scope>,
  fallback: ReadonlySet<Scope> = DEFAULT_SCOPES,
): ReadonlySet<Scope> {
  if (requested && [...requested].some((scope) => !ceiling.has(scope))) {
    throw invalidScope('The requested scope exceeds what this account may be granted');
  }
  const granted = requested ?? new Set([...fallback].filter((scope) => ceiling.has(scope)));
  if (granted.size === 0) throw invalidScope('No scope can be granted');
  return granted;
}

/** Returns the scopes a verified token's `scope` claim grants; names this version does not know grant nothing. */
export function scopesOfToken(claim: string): ReadonlySet<Scope> {
  const scopes = new Set<Scope>();
  for (const name of claim.split(' ')) {
    if (name === LEGACY_CONVERSATION) for (const scope of LEGACY_EXPANSION) scopes.add(scope);
    else if (isScope(name)) scopes.add(name);
  }
  return scopes;
}

/** Returns the token's scopes that the user may still hold: a role taken away takes its scope out of live tokens. */
export function effectiveScopes(scopes: ReadonlySet<Scope>, user: Pick<User, 'roles'>): ReadonlySet<Scope> {
  const permitted = scopesPermittedTo(user);
  return new Set([...scopes].filter((scope) => permitted.has(scope)));
}

/** Returns the scope as the token and the token response write it: space-separated, in a fixed order. */
export function formatScope(scopes: ReadonlySet<Scope>): string {
  return SCOPES.filter((scope) => scopes.has(scope)).join(' ');
}
