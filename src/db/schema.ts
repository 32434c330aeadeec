import type { Generated, Insertable, Kysely, Selectable } from 'kysely';
import type { Level } from '../domain/user.ts';

export interface UsersTable {
  id: Generated<number>;
  username: string;
  // NFKC + case fold: the unique index on it makes `Alice` and `alice` one account.
  username_canonical: string;
  // UTS #39 skeleton of the canonical form: its unique index makes lookalikes (Cyrillic `аlice`) one account.
  // Uniqueness only: logins look up username_canonical.
  username_skeleton: string;
  email: string;
  email_canonical: string;
  password_hash: string;
  age: number;
  level: Level;
  created_at_ms: number;
  updated_at_ms: number;
  // Raised when the user's trusted clients must be forgotten; bound into their device tokens.
  trust_generation: Generated<number>;
  // Space-separated role names (domain/user.ts ROLES); empty for most users.
  roles: Generated<string>;
  // Set while the account is disabled: it cannot log in and its tokens stop working.
  disabled_at_ms: number | null;
  // When the user proved they read mail at `email`; null until then, and again after an email change.
  email_verified_at_ms: number | null;
  // An address the user asked to change to, kept here until a link mailed to it is used.
  pending_email: string | null;
  // The WebAuthn user handle (64 random bytes, base64url) passkeys carry; null until the first registration starts.
  webauthn_user_handle: Generated<string | null>;
}

export interface ConversationsTable {
  id: Generated<number>;
  user_id: number;
  created_at_ms: number;
}

export interface MessagesTable {
  id: Generated<number>;
  conversation_id: number;
  author: 'system' | 'user';
  body: string;
  created_at_ms: number;
}

export interface SigningKeysTable {
  kid: string;
  algorithm: string;
  public_jwk: string;
  private_jwk: string;
  created_at_ms: number;
  retired_at_ms: number | null;
}

export interface SessionsTable {
  id: string;
  user_id: number;
  created_at_ms: number;
  last_used_at_ms: number;
  // Absolute end of the session, fixed at login; the idle limit is counted from last_used_at_ms.
  expires_at_ms: number;
  revoked_at_ms: number | null;
  revoked_reason: string | null;
  user_agent: string | null;
  ip_address: string | null;
  // The scope the login granted, space-separated: its refreshes may narrow it, never widen it.
  scope: Generated<string>;
  // RFC 8176 methods of the login, space-separated (`pwd`, or `pwd otp mfa`): its refreshes carry them on.
  amr: Generated<string>;
}

export interface RefreshTokensTable {
  id: string;
  session_id: string;
  secret_hash: string;
  parent_id: string | null;
  created_at_ms: number;
  used_at_ms: number | null;
}

export interface ServerSecretsTable {
  name: string;
  value: string;
  created_at_ms: number;
}

export interface AuditEventsTable {
  id: Generated<number>;
  event: string;
  // Not a foreign key: see the migration.
  user_id: number | null;
  ip: string | null;
  user_agent: string | null;
  request_id: string | null;
  created_at_ms: number;
  // JSON of an allow-listed object (services/audit.ts), a few hundred bytes at most.
  detail: string | null;
}

export interface KnownIpsTable {
  user_id: number;
  // An IPv4 address or an IPv6 prefix (`2001:db8:1:2::/64`): the key login throttling counts a client by.
  ip: string;
  last_success_at_ms: number;
}

/** One row, rewritten by readiness while SQLite's writes fail, to learn when they land again. */
export interface ReadinessProbeTable {
  id: number;
  written_at_ms: number;
}

export interface OneTimeTokensTable {
  id: Generated<number>;
  user_id: number;
  // What the token may do: 'verify_email' or 'reset_password'.
  purpose: string;
  // The address the token was mailed to: it proves that address and no other.
  email: string;
  // base64url SHA-256 of the token; the token itself is never stored.
  token_hash: string;
  created_at_ms: number;
  expires_at_ms: number;
  consumed_at_ms: number | null;
}

export interface EmailOutboxTable {
  id: Generated<number>;
  user_id: number | null;
  recipient: string;
  template: string;
  // Sealed JSON of the template's values (links hold tokens); null once the mail is sent.
  payload: string | null;
  created_at_ms: number;
  // Not before this time: the next attempt, pushed back after each failure.
  send_after_ms: number;
  attempts: Generated<number>;
  last_error: string | null;
  // A sender's lease: no other instance takes the mail before this time.
  claimed_until_ms: number | null;
  sent_at_ms: number | null;
}

export interface MfaFactorsTable {
  // Random, not generated: the sealed secret is bound to it before the row exists.
  id: string;
  user_id: number;
  type: 'totp';
  // Pending until a code confirms it; only an active factor gates a login.
  status: 'pending' | 'active';
  // SecretBox-sealed base32 secret, bound to the factor id and user.
  secret_sealed: string;
  // The last RFC 6238 time step accepted: a code of this step or an earlier one is refused.
  last_used_step: number | null;
  created_at_ms: number;
  confirmed_at_ms: number | null;
}

export interface RecoveryCodesTable {
  id: Generated<number>;
  user_id: number;
  // argon2id PHC string of the normalised code; rows written before it, its base64url SHA-256.
  code_hash: string;
  created_at_ms: number;
  used_at_ms: number | null;
}

export interface MfaChallengesTable {
  id: Generated<number>;
  // base64url SHA-256 of the mfa_token; the token itself is never stored.
  token_hash: string;
  user_id: number;
  // The scope the password leg granted.
  scope: string;
  // SHA-256 of the password hash the password leg matched.
  password_digest: string;
  created_at_ms: number;
  expires_at_ms: number;
  attempts: Generated<number>;
  consumed_at_ms: number | null;
}

export interface WebauthnCredentialsTable {
  // Random, not generated: it names the passkey in URLs without telling how many exist.
  id: string;
  user_id: number;
  // base64url of the authenticator's credential id; unique across users.
  credential_id: string;
  // base64url of the COSE public key.
  public_key: string;
  // The last signature counter accepted (WebAuthn L3 §6.1.1).
  sign_count: number;
  // Space-separated AuthenticatorTransport values the browser reported.
  transports: string;
  aaguid: string;
  // 0/1 flags: BE (synced passkey), BS (backed up now), UV seen at registration, counter regression seen.
  backup_eligible: number;
  backup_state: number;
  uv_initialized: number;
  suspect: number;
  name: string;
  created_at_ms: number;
  last_used_at_ms: number | null;
}

export interface WebauthnChallengesTable {
  // Random: the challenge_id clients send back.
  id: string;
  purpose: 'registration' | 'passwordless' | 'second_factor' | 'password_reset';
  // The user the ceremony is for; null for passwordless options, whose user is unknown until the assertion.
  user_id: number | null;
  // base64url of 32 random bytes.
  challenge: string;
  created_at_ms: number;
  expires_at_ms: number;
  consumed_at_ms: number | null;
}

export interface Database {
  users: UsersTable;
  conversations: ConversationsTable;
  messages: MessagesTable;
  signing_keys: SigningKeysTable;
  sessions: SessionsTable;
  refresh_tokens: RefreshTokensTable;
  server_secrets: ServerSecretsTable;
  audit_events: AuditEventsTable;
  known_ips: KnownIpsTable;
  one_time_tokens: OneTimeTokensTable;
  email_outbox: EmailOutboxTable;
  mfa_factors: MfaFactorsTable;
  recovery_codes: RecoveryCodesTable;
  mfa_challenges: MfaChallengesTable;
  webauthn_credentials: WebauthnCredentialsTable;
  webauthn_challenges: WebauthnChallengesTable;
  readiness_probe: ReadinessProbeTable;
}

export type Db = Kysely<Database>;
export type UserRow = Selectable<UsersTable>;
export type NewUserRow = Insertable<UsersTable>;
export type SigningKeyRow = Selectable<SigningKeysTable>;
/** A session as the domain reads it: why it was revoked stays in the database, for operators. */
export type SessionRow = Omit<Selectable<SessionsTable>, 'revoked_reason'>;
export type Dialect = 'sqlite' | 'postgres';
