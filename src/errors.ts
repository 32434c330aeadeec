export type ErrorCode =
  | 'validation_failed'
  | 'username_taken'
  | 'email_taken'
  | 'conversation_full'
  | 'invalid_password'
  | 'malformed_request'
  | 'invalid_request'
  | 'invalid_grant'
  | 'unsupported_grant_type'
  | 'invalid_scope'
  | 'temporarily_unavailable'
  | 'mfa_required'
  | 'mfa_already_enrolled'
  | 'invalid_second_factor'
  | 'second_factor_required'
  | 'insufficient_user_authentication'
  | 'passkey_limit'
  | 'invalid_passkey'
  | 'no_passkey'
  | 'missing_token'
  | 'malformed_authorization'
  | 'cross_site_request'
  | 'invalid_token'
  | 'account_gone'
  | 'invalid_one_time_token'
  | 'insufficient_scope'
  | 'not_found'
  | 'method_not_allowed'
  | 'request_timeout'
  | 'expectation_failed'
  | 'uri_too_long'
  | 'headers_too_large'
  | 'http_version_not_supported'
  | 'not_implemented'
  | 'precondition_failed'
  | 'range_not_satisfiable'
  | 'payload_too_large'
  | 'unsupported_media_type'
  | 'unstorable_value'
  | 'service_unavailable'
  | 'overloaded'
  | 'internal';

/** Why a request was answered 503, for the metrics: what was unavailable, or what was full. */
export type UnavailableReason =
  | 'overloaded'
  | 'hash_queue_full'
  | 'hash_queue_timeout'
  | 'client_gone'
  | 'database_unavailable'
  | 'shutting_down'
  | 'password_check_unavailable';

/** One entry a field that failed validation: FastAPI's `loc`, `msg`, `type`. */
export interface FieldProblem {
  loc: (string | number)[];
  msg: string;
  type: string;
}

export interface AppErrorOptions {
  details?: FieldProblem[];
  cause?: unknown;
  /** When the client may try again (throttling, overload). */
  retryAfterSeconds?: number;
  /** The token that continues a login waiting for its second factor. */
  mfaToken?: string;
  /** The second factors the account can continue with (mfa_required; second_factor_required of a reset). */
  mfaMethods?: readonly string[];
  /** RFC 9470's max_age: a login with a second factor this many seconds ago would have done instead. */
  maxAgeSeconds?: number;
  /** The scope a route needs and the token lacks (insufficient_scope). */
  requiredScope?: string;
  /** Why the service is unavailable (service_unavailable, overloaded). */
  unavailableReason?: UnavailableReason;
}

export class AppError extends Error {
  readonly code: ErrorCode;
  readonly details: FieldProblem[] | undefined;
  readonly retryAfterSeconds: number | undefined;
  readonly mfaToken: string | undefined;
  readonly mfaMethods: readonly string[] | undefined;
  readonly maxAgeSeconds: number | undefined;
  readonly requiredScope: string | undefined;
  readonly unavailableReason: UnavailableReason | undefined;

  constructor(code: ErrorCode, message: string, options: AppErrorOptions = {}) {
    super(message, { cause: options.cause });
    this.name = 'AppError';
    this.code = code;
    this.details = options.details;
    this.retryAfterSeconds = options.retryAfterSeconds;
    this.mfaToken = options.mfaToken;
    this.mfaMethods = options.mfaMethods;
    this.maxAgeSeconds = options.maxAgeSeconds;
    this.requiredScope = options.requiredScope;
    this.unavailableReason = options.unavailableReason;
  }
}

/**
 * Builds an error without capturing a stack trace: for refusals expected by the thousand a second under a flood (a
 * shed hash), whose stack nobody reads and whose capture costs more than the rest of the refusal.
 */
export function withoutStackTrace<T>(build: () => T): T {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    return build();
  } finally {
    Error.stackTraceLimit = limit;
  }
}
