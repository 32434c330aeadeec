export type ErrorCode =
  | 'validation_failed'
  | 'username_taken'
  | 'email_taken'
  | 'invalid_password'
  | 'invalid_request'
  | 'invalid_grant'
  | 'unsupported_grant_type'
  | 'invalid_scope'
  | 'temporarily_unavailable'
  | 'mfa_required'
  | 'missing_token'
  | 'malformed_authorization'
  | 'invalid_token'
  | 'insufficient_scope'
  | 'not_found'
  | 'method_not_allowed'
  | 'payload_too_large'
  | 'unsupported_media_type'
  | 'unstorable_value'
  | 'service_unavailable'
  | 'overloaded'
  | 'internal';

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
  /** The scope a route needs and the token lacks (insufficient_scope). */
  requiredScope?: string;
}

export class AppError extends Error {
  readonly code: ErrorCode;
  readonly details: FieldProblem[] | undefined;
  readonly retryAfterSeconds: number | undefined;
  readonly mfaToken: string | undefined;
  readonly requiredScope: string | undefined;

  constructor(code: ErrorCode, message: string, options: AppErrorOptions = {}) {
    super(message, { cause: options.cause });
    this.name = 'AppError';
    this.code = code;
    this.details = options.details;
    this.retryAfterSeconds = options.retryAfterSeconds;
    this.mfaToken = options.mfaToken;
    this.requiredScope = options.requiredScope;
  }
}
