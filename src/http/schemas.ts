import type { FastifyRequest } from 'fastify';
import Type, { type Static } from 'typebox';
import { MAX_EMAIL_LENGTH, UNDRAWN_CHARACTERS } from '../domain/email.ts';
import { LEVELS, ROLES, type User } from '../domain/user.ts';
import { MAX_AGE, MAX_PASSWORD_LENGTH } from '../services/accounts.ts';
import type { PasskeyRecord } from '../services/passkeys.ts';
import { accountRecord } from '../services/records.ts';
import { describePattern } from './error-handler.ts';

const LevelSchema = Type.Enum([...LEVELS], {
  description: 'A proficiency, never a privilege.',
});

export const RegisterBody = Type.Object({
  username: Type.String({
    maxLength: 64,
    description: "3 to 32 letters, digits, '.', '_' or '-' after NFKC; unique case-insensitively.",
    examples: ['alice'],
  }),
  email: Type.String({ format: 'email', maxLength: MAX_EMAIL_LENGTH, examples: ['alice@example.com'] }),
  age: Type.Integer({
    minimum: 0,
    maximum: MAX_AGE,
    description: 'A digit string such as "42" is accepted too.',
  }),
  level: LevelSchema,
  // Last, as in the seed's pydantic model (UserCreate adds it to UserBase): a 422 lists its fields in that order.
  password: Type.String({
    format: 'password',
    maxLength: MAX_PASSWORD_LENGTH,
    description: 'PASSWORD_MIN_LENGTH (8) to 1024 characters, no control characters, not a common password.',
  }),
});
export type RegisterBody = Static<typeof RegisterBody>;

export const UserResponse = Type.Object({
  id: Type.Integer(),
  username: Type.String(),
  email: Type.String(),
  age: Type.Integer(),
  level: LevelSchema,
});
export type UserResponse = Static<typeof UserResponse>;

const optionalString = (description: string) => Type.Optional(Type.String({ description }));

export const TokenRequestBody = Type.Object({
  grant_type: optionalString('password (the default when omitted)'),
  // Far above any username or password (32 and 1024 characters once normalised), as every other password field has.
  username: Type.Optional(Type.String({ maxLength: 256, description: 'The username, in any letter case' })),
  password: Type.Optional(Type.String({ format: 'password', maxLength: 4096 })),
  refresh_token: optionalString('For grant_type=refresh_token'),
  scope: optionalString(
    'Space-separated: conversation:read, conversation:write, admin. Omitted or empty: conversation:read conversation:write. ' +
      'A refresh grant may ask for less than its login was granted, never more. "conversation" means both conversation scopes.',
  ),
  client_id: optionalString('Ignored'),
  client_secret: Type.Optional(Type.String({ format: 'password', description: 'Ignored' })),
  device_token: Type.Optional(
    Type.String({
      maxLength: 256,
      description:
        'For grant_type=password and the MFA grant: the device_token of an earlier login of this client. Failed logins of other clients do not lock it out.',
    }),
  ),
  mfa_token: Type.Optional(
    Type.String({
      maxLength: 256,
      format: 'password',
      description:
        'For grant_type=urn:gatehouse:params:oauth:grant-type:mfa: the mfa_token of the 403 mfa_required answer (5 minutes, 5 attempts, single use)',
    }),
  ),
  otp: Type.Optional(
    Type.String({
      maxLength: 64,
      format: 'password',
      description: 'For the MFA grant: the 6-digit code of the authenticator app',
    }),
  ),
  recovery_code: Type.Optional(
    Type.String({
      maxLength: 64,
      format: 'password',
      description:
        'For the MFA grant: one of the recovery codes (spaces, dashes and letter case ignored); single use',
    }),
  ),
  challenge_id: Type.Optional(
    Type.String({
      maxLength: 64,
      description: 'For the webauthn grants: the challenge_id the passkey options came with',
    }),
  ),
  webauthn_response: Type.Optional(
    Type.Union([Type.String({ maxLength: 16384 }), Type.Object({}, { additionalProperties: true })], {
      description:
        'For the webauthn grants: the AuthenticationResponseJSON of @simplewebauthn/browser, as JSON text (form bodies) or an object (JSON bodies)',
    }),
  ),
});
export type TokenRequestBody = Static<typeof TokenRequestBody>;

export const TokenResponse = Type.Object({
  access_token: Type.String(),
  token_type: Type.Literal('bearer'),
  expires_in: Type.Integer({ description: 'Seconds until the access token expires' }),
  refresh_token: Type.Optional(
    Type.String({
      description:
        'Single use: each refresh returns the next one. Absent for the web client (X-Gatehouse-Client: web), which keeps it in an HttpOnly cookie',
    }),
  ),
  scope: Type.String({
    description: 'The scope granted, space-separated',
    examples: ['conversation:read conversation:write'],
  }),
  device_token: Type.Optional(
    Type.String({
      description:
        'After a password login (with throttling on): keep it and send it with the next password logins of this client, for its failures to be counted apart from other clients. Valid DEVICE_TOKEN_TTL_DAYS. The web client gets it in an HttpOnly cookie instead.',
    }),
  ),
});
export type TokenResponse = Static<typeof TokenResponse>;

export const RevokeRequestBody = Type.Object({
  token: optionalString('The refresh token (or access token) to revoke'),
  token_type_hint: optionalString('refresh_token or access_token; optional'),
});
export type RevokeRequestBody = Static<typeof RevokeRequestBody>;

export const OAuthErrorResponse = Type.Object({
  error: Type.Enum([
    'invalid_request',
    'invalid_grant',
    'invalid_scope',
    'unsupported_grant_type',
    'temporarily_unavailable',
  ]),
  error_description: Type.String(),
  detail: Type.String({ description: "FastAPI's field, kept for seed clients" }),
});

export const MfaRequiredResponse = Type.Object(
  {
    error: Type.String({ examples: ['mfa_required'] }),
    error_description: Type.String(),
    detail: Type.String(),
    mfa_token: Type.Optional(
      Type.String({ description: 'Opaque; for the MFA grant within 5 minutes, 5 attempts, single use' }),
    ),
    mfa_methods: Type.Optional(
      Type.Array(Type.String(), {
        description: 'The second factors this account has: otp and recovery_code, webauthn',
        examples: [['otp', 'recovery_code']],
      }),
    ),
  },
  {
    description:
      'mfa_required: the password was right and the account has a second factor. Also invalid_request for a cross-site request of the web client',
  },
);

export const ConversationResponse = Type.Object({
  conversation: Type.String(),
  current_user: Type.String(),
});

export const DetailResponse = Type.Object({ detail: Type.String() });

export const MessageBody = Type.Object({
  text: Type.String({
    // The service counts the limit after trimming; this only bounds what is read.
    maxLength: 16000,
    description:
      '1 to 4000 characters once trimmed; newlines and tabs allowed (CRLF is stored as LF), other control characters ' +
      'and bidirectional overrides refused.',
    examples: ['Hello from the API'],
  }),
});
export type MessageBody = Static<typeof MessageBody>;

export const MessageResponse = Type.Object({
  id: Type.Integer(),
  author: Type.Enum(['system', 'user'], {
    description: 'system: the welcome message; user: written by the user',
  }),
  text: Type.String(),
  created_at: Type.String({ format: 'date-time' }),
});

export const MessagesQuery = Type.Object({
  limit: Type.Optional(
    Type.Integer({ minimum: 1, maximum: 100, default: 20, description: 'Messages per page' }),
  ),
  before: Type.Optional(
    Type.String({
      minLength: 1,
      maxLength: 64,
      description: 'The `next` cursor of the previous page, as it was given',
    }),
  ),
});
export type MessagesQuery = Static<typeof MessagesQuery>;

export const MessagesResponse = Type.Object({
  messages: Type.Array(MessageResponse, { description: 'Newest first' }),
  next: Type.Union([Type.String(), Type.Null()], { description: 'Cursor of the next (older) page, or null' }),
});

export const ForbiddenResponse = Type.Object({
  detail: Type.String({
    description: 'Not enough permissions: the token lacks the scope in WWW-Authenticate',
  }),
});

export const ProfileUpdateBody = Type.Object({
  email: Type.Optional(Type.String({ format: 'email', maxLength: MAX_EMAIL_LENGTH })),
  current_password: Type.Optional(
    Type.String({
      format: 'password',
      maxLength: 4096,
      description:
        'Required to change the email to a new address; optional otherwise. When given, checked, and the change applies only while it is still the password',
    }),
  ),
  age: Type.Optional(Type.Integer({ minimum: 0, maximum: MAX_AGE })),
  level: Type.Optional(LevelSchema),
});
export type ProfileUpdateBody = Static<typeof ProfileUpdateBody>;

export const EmailChangeBody = Type.Object({
  new_email: Type.String({ format: 'email', maxLength: MAX_EMAIL_LENGTH, examples: ['alice@example.net'] }),
  password: Type.String({ format: 'password', maxLength: 4096, description: 'Your current password' }),
});
export type EmailChangeBody = Static<typeof EmailChangeBody>;

export const PasswordChangeBody = Type.Object({
  current_password: Type.String({ format: 'password', maxLength: 4096 }),
  new_password: Type.String({ format: 'password', maxLength: MAX_PASSWORD_LENGTH }),
});
export type PasswordChangeBody = Static<typeof PasswordChangeBody>;

export const AccountDeletionBody = Type.Object({
  password: Type.String({ format: 'password', maxLength: 4096 }),
});
export type AccountDeletionBody = Static<typeof AccountDeletionBody>;

const RecentPassword = {
  password: Type.Optional(
    Type.String({
      format: 'password',
      maxLength: 4096,
      description: 'Your current password (recent authentication)',
    }),
  ),
  current_password: Type.Optional(
    Type.String({ format: 'password', maxLength: 4096, description: 'Alias of password' }),
  ),
};
const OtpField = Type.Optional(
  Type.String({
    format: 'password',
    maxLength: 64,
    description: 'A current 6-digit code of the authenticator app',
  }),
);
const RecoveryCodeField = Type.Optional(
  Type.String({
    format: 'password',
    maxLength: 64,
    description: 'One of your recovery codes (spaces, dashes and letter case ignored)',
  }),
);

export const MfaPasswordBody = Type.Object({
  ...RecentPassword,
  otp: OtpField,
  recovery_code: RecoveryCodeField,
});
export type MfaPasswordBody = Static<typeof MfaPasswordBody>;

export const MfaConfirmBody = Type.Object({
  code: OtpField,
  otp: Type.Optional(Type.String({ format: 'password', maxLength: 64, description: 'Alias of code' })),
});
export type MfaConfirmBody = Static<typeof MfaConfirmBody>;

export const MfaRemoveBody = Type.Object({
  ...RecentPassword,
  otp: OtpField,
  recovery_code: RecoveryCodeField,
});
export type MfaRemoveBody = Static<typeof MfaRemoveBody>;

export const MfaRegenerateBody = Type.Object({ ...RecentPassword, otp: OtpField });
export type MfaRegenerateBody = Static<typeof MfaRegenerateBody>;

export const MfaStatusResponse = Type.Object({
  totp: Type.Union([
    Type.Null(),
    Type.Object({
      status: Type.Union([Type.Literal('pending'), Type.Literal('active')]),
      created_at: Type.String({ format: 'date-time' }),
    }),
  ]),
  recovery_codes_left: Type.Integer(),
  passkeys: Type.Integer(),
});

export const TotpEnrolmentResponse = Type.Object({
  factor_id: Type.String(),
  secret: Type.String({ description: 'Base32; shown once, for typing into an authenticator app' }),
  otpauth_uri: Type.String({ description: 'The otpauth:// URI an authenticator app reads from a QR code' }),
});

export const RecoveryCodesResponse = Type.Object({
  recovery_codes: Type.Array(Type.String(), {
    description: 'Shown once: each works once in place of a code; keep them offline',
  }),
});

// `code` when the error table gives one: a route's 400 may also be a malformed request or Authorization header, which
// has none, and a required property missing from an answer would make the serializer answer 500 instead.
export const CodedErrorResponse = Type.Object({ detail: Type.String(), code: Type.Optional(Type.String()) });

export const ResetRefusalResponse = Type.Object({
  detail: Type.String(),
  code: Type.String(),
  mfa_methods: Type.Optional(
    Type.Array(Type.String(), {
      description: 'With second_factor_required: the methods the account has (otp, recovery_code, webauthn)',
    }),
  ),
});

export const SessionResponse = Type.Object({
  id: Type.String(),
  created_at: Type.String({ format: 'date-time' }),
  last_used_at: Type.String({ format: 'date-time' }),
  expires_at: Type.String({ format: 'date-time' }),
  user_agent: Type.Union([Type.String(), Type.Null()]),
  ip_address: Type.Union([Type.String(), Type.Null()]),
  current: Type.Boolean({ description: 'Whether this is the session of the token making the request' }),
});

export const SessionListResponse = Type.Object({ sessions: Type.Array(SessionResponse) });

export const ActivityQuery = Type.Object({
  limit: Type.Optional(
    Type.Integer({ minimum: 1, maximum: 100, default: 20, description: 'Events per page' }),
  ),
  before: Type.Optional(
    Type.String({ maxLength: 64, description: 'The `next` cursor of the previous page, as it was given' }),
  ),
});
export type ActivityQuery = Static<typeof ActivityQuery>;

export const ActivityEventResponse = Type.Object({
  event: Type.String({ examples: ['login_failed'] }),
  at: Type.String({ format: 'date-time' }),
  ip: Type.Union([Type.String(), Type.Null()]),
  user_agent: Type.Union([Type.String(), Type.Null()]),
  detail: Type.Record(Type.String(), Type.Union([Type.String(), Type.Number(), Type.Boolean()]), {
    description: 'A few allow-listed facts (reason, sessionId, ...); never a password or a token',
  }),
});

export const ActivityResponse = Type.Object({
  events: Type.Array(ActivityEventResponse, { description: 'Newest first' }),
  next: Type.Union([Type.String(), Type.Null()], { description: 'Cursor of the next (older) page, or null' }),
});

export const ConflictResponse = Type.Object({
  detail: Type.String(),
  code: Type.Enum(['username_taken', 'email_taken']),
});

export const ConversationFullResponse = Type.Object({
  detail: Type.String(),
  code: Type.Enum(['conversation_full']),
});

export const ValidationErrorResponse = Type.Object({
  detail: Type.Array(
    Type.Object({
      loc: Type.Array(Type.Union([Type.String(), Type.Integer()])),
      msg: Type.String(),
      type: Type.String(),
    }),
  ),
});

export const toUserResponse = (user: User): UserResponse => ({
  id: user.id,
  username: user.username,
  email: user.email,
  age: user.age,
  level: user.level,
});

/** The caller's own account: the registration shape, and the state of its email. */
export const OwnUserResponse = Type.Object({
  ...UserResponse.properties,
  email_verified: Type.Boolean({ description: 'Whether a link mailed to `email` was used' }),
  pending_email: Type.Union([Type.String(), Type.Null()], {
    description:
      'The address asked for by PATCH /users/me, until the link mailed to it is used; null when none',
  }),
});
export type OwnUserResponse = Static<typeof OwnUserResponse>;

export const toOwnUserResponse = (user: User): OwnUserResponse => ({
  ...toUserResponse(user),
  email_verified: user.emailVerifiedAt !== null,
  pending_email: user.pendingEmail,
});

// Long enough for anything pasted by mistake (an access token, a whole link) to be answered invalid_token, not 422.
const MailedToken = Type.String({
  maxLength: 4096,
  description: "The token from the link's fragment (#token=...), as it was mailed",
});

export const EmailVerificationBody = Type.Object({ token: MailedToken });
export type EmailVerificationBody = Static<typeof EmailVerificationBody>;

export const EmailVerifiedResponse = Type.Object({
  email: Type.String({ description: 'The address now verified (a pending address has become the email)' }),
  email_verified: Type.Literal(true),
});

export const EmailAddressBody = Type.Object({
  email: Type.String({ format: 'email', maxLength: MAX_EMAIL_LENGTH, examples: ['alice@example.com'] }),
});
export type EmailAddressBody = Static<typeof EmailAddressBody>;

export const PasswordResetBody = Type.Object({
  token: MailedToken,
  otp: Type.Optional(
    Type.String({
      format: 'password',
      maxLength: 64,
      description:
        'When the account has second factors, one of otp, recovery_code or challenge_id with webauthn_response is required',
    }),
  ),
  recovery_code: Type.Optional(
    Type.String({
      format: 'password',
      maxLength: 64,
      description: 'In place of otp: one of the recovery codes; it is spent',
    }),
  ),
  challenge_id: Type.Optional(
    Type.String({
      maxLength: 64,
      description: 'In place of a code: the challenge_id of POST /password/reset/webauthn/options',
    }),
  ),
  webauthn_response: Type.Optional(
    Type.Union([Type.String({ maxLength: 16384 }), Type.Object({}, { additionalProperties: true })], {
      description:
        "With challenge_id: the passkey's AuthenticationResponseJSON (@simplewebauthn/browser), as JSON text (form bodies) or an object",
    }),
  ),
  new_password: Type.String({
    format: 'password',
    maxLength: MAX_PASSWORD_LENGTH,
    description: "Registration's rules: PASSWORD_MIN_LENGTH (8) to 1024 characters, not a common password.",
  }),
});
export type PasswordResetBody = Static<typeof PasswordResetBody>;

export const PasswordResetOptionsBody = Type.Object({ token: MailedToken });
export type PasswordResetOptionsBody = Static<typeof PasswordResetOptionsBody>;

export const AcceptedResponse = Type.Object(
  {},
  { description: 'Accepted: whether a mail goes out is not said (the same answer for every address)' },
);

export const InvalidOneTimeTokenResponse = Type.Object({
  error: Type.Literal('invalid_token'),
  error_description: Type.String(),
  detail: Type.String(),
});

// What pydantic's lax mode parses as an integer: ASCII digits, a sign, single underscores between digits, and a
// fraction of zeros, with whitespace around.
const INTEGER_STRING = /^\s*([+-]?\d+(?:_\d+)*)(?:\.0+)?\s*$/;
// Python's integers have no size: a longer digit string is only known to be past any limit here, with its sign.
const PAST_ANY_LIMIT = Number.MAX_SAFE_INTEGER;

const acceptDigitString =
  (part: 'body' | 'query', field: string) =>
  async (request: FastifyRequest): Promise<void> => {
    const values = request[part] as Record<string, unknown> | null;
    const value = values && typeof values === 'object' ? values[field] : undefined;
    const digits = typeof value === 'string' ? INTEGER_STRING.exec(value)?.[1] : undefined;
    if (values && digits !== undefined) {
      const value = Number(digits.replaceAll('_', ''));
      values[field] = Math.abs(value) > PAST_ANY_LIMIT ? Math.sign(value) * PAST_ANY_LIMIT : value;
    }
  };

/** preValidation hook: FastAPI (pydantic lax mode) takes "42" (or " +4_2 ") for an integer age; nothing else is coerced. */
export const acceptDigitStringAge = acceptDigitString('body', 'age');

/** preValidation hook: a query string is text, so `?limit=20` is read as the integer it spells, and only that. */
export const acceptDigitStringLimit = acceptDigitString('query', 'limit');

export const AdminUserResponse = Type.Object({
  id: Type.Integer(),
  username: Type.String(),
  email: Type.String(),
  age: Type.Integer(),
  level: LevelSchema,
  roles: Type.Array(Type.Enum([...ROLES])),
  disabled_at: Type.Union([Type.String({ format: 'date-time' }), Type.Null()], {
    description: 'Since when the account cannot log in; null while it can',
  }),
  created_at: Type.String({ format: 'date-time' }),
});
export type AdminUserResponse = Static<typeof AdminUserResponse>;

export const AdminUserDetailsResponse = Type.Object({
  ...AdminUserResponse.properties,
  live_sessions: Type.Integer(),
  last_login_at: Type.Union([Type.String({ format: 'date-time' }), Type.Null()], {
    description: 'When the newest stored session began (ended sessions are kept a day)',
  }),
});

export const AdminUserPageResponse = Type.Object({
  users: Type.Array(AdminUserResponse, { description: 'In id order' }),
  next: Type.Union([Type.String(), Type.Null()], { description: 'Cursor of the next page, or null' }),
});

export const AdminUserListQuery = Type.Object({
  search: Type.Optional(
    Type.String({ maxLength: 254, description: 'A part of the username or email, in any letter case' }),
  ),
  limit: Type.Optional(
    Type.Integer({ minimum: 1, maximum: 100, default: 50, description: 'Users per page' }),
  ),
  cursor: Type.Optional(
    Type.String({ maxLength: 64, description: 'The `next` cursor of the previous page, as it was given' }),
  ),
});
export type AdminUserListQuery = Static<typeof AdminUserListQuery>;

export const AdminUserParams = Type.Object({
  id: Type.String({ pattern: '^[1-9][0-9]{0,14}$', description: 'The user id' }),
});

export const AdminSessionListResponse = Type.Object({
  sessions: Type.Array(Type.Omit(SessionResponse, ['current']), {
    description: 'Live sessions, newest first',
  }),
});

export const UnlockResponse = Type.Object({
  unlocked: Type.Boolean({ description: 'False when login throttling is off (nothing is counted)' }),
});

export const EndedSessionsResponse = Type.Object({ ended: Type.Integer() });

export const toAdminUserResponse = (user: User): AdminUserResponse => accountRecord(user);

// Passkeys (WebAuthn).

// Shown on the account page and quoted in the mfa_changed mail: no control characters, lone surrogates, line or
// paragraph separators, or the bidi embeddings, overrides and isolates that could make a notice read other than it
// is; and at least one character that is drawn: not a space, a mark, a format, private-use or unassigned character,
// or one drawn as nothing (as email addresses are held to: domain/email.ts).
const NAME_CHARACTER = '[^\\p{Cc}\\p{Cs}\\p{Zl}\\p{Zp}\\u202A-\\u202E\\u2066-\\u2069]';
const DRAWN_CHARACTER = `[^\\s\\p{M}${UNDRAWN_CHARACTERS}]`;
const PASSKEY_NAME_PATTERN = `^(?=.*${DRAWN_CHARACTER})${NAME_CHARACTER}+$`;
describePattern(
  PASSKEY_NAME_PATTERN,
  'The name needs a visible character, and no control characters, line separators or bidi overrides',
);
const passkeyName = Type.String({
  minLength: 1,
  maxLength: 64,
  pattern: PASSKEY_NAME_PATTERN,
  description:
    '1 to 64 characters once trimmed, at least one of them visible; no control characters, line separators or bidi overrides',
});

export const PasskeyPasswordBody = Type.Object({
  ...RecentPassword,
  otp: OtpField,
  recovery_code: RecoveryCodeField,
});
export type PasskeyPasswordBody = Static<typeof PasskeyPasswordBody>;

export const PasskeyRegistrationOptionsBody = Type.Object({
  ...PasskeyPasswordBody.properties,
  // Checked here too, before the authenticator makes a credential that the verification would then refuse to store.
  name: Type.Optional(passkeyName),
});

export const PasskeyRegistrationBody = Type.Object({
  challenge_id: Type.String({ minLength: 1, maxLength: 64 }),
  response: Type.Union([Type.String({ maxLength: 16384 }), Type.Object({}, { additionalProperties: true })], {
    description: 'The RegistrationResponseJSON of @simplewebauthn/browser (an object, or its JSON text)',
  }),
  name: Type.Optional(passkeyName),
});
export type PasskeyRegistrationBody = Static<typeof PasskeyRegistrationBody>;

export const PasskeyRenameBody = Type.Object({ name: passkeyName });
export type PasskeyRenameBody = Static<typeof PasskeyRenameBody>;

export const PasskeyIdParams = Type.Object({ id: Type.String({ pattern: '^[A-Za-z0-9_-]{1,64}$' }) });

export const PasskeyResponse = Type.Object({
  id: Type.String(),
  name: Type.String(),
  created_at: Type.String({ format: 'date-time' }),
  last_used_at: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  backed_up: Type.Boolean({ description: 'The authenticator says it is backed up (a synced passkey)' }),
  suspect: Type.Boolean({
    description: 'Its signature counter went backwards once: it may be a copy, and is refused',
  }),
});
export type PasskeyResponse = Static<typeof PasskeyResponse>;

export const PasskeyListResponse = Type.Object({ passkeys: Type.Array(PasskeyResponse) });

export const CeremonyOptionsResponse = Type.Object({
  challenge_id: Type.String({ description: 'Send it back with the response; valid 5 minutes, once' }),
  options: Type.Unknown({
    description: 'PublicKeyCredential{Creation,Request}OptionsJSON for @simplewebauthn/browser',
  }),
});

export const MfaTokenBody = Type.Object({ mfa_token: Type.String({ minLength: 1, maxLength: 256 }) });
export type MfaTokenBody = Static<typeof MfaTokenBody>;

export const toPasskeyResponse = (passkey: PasskeyRecord): PasskeyResponse => ({
  id: passkey.id,
  name: passkey.name,
  created_at: passkey.createdAt.toISOString(),
  last_used_at: passkey.lastUsedAt?.toISOString() ?? null,
  backed_up: passkey.backedUp,
  suspect: passkey.suspect,
});
