export type ErrorCode =
  | 'validation_failed'
  | 'username_taken'
  | 'email_taken'
  | 'invalid_password'
  | 'invalid_request'
  | 'invalid_grant'
  | 'unsupported_grant_type'
  | 'missing_token'
  | 'malformed_authorization'
  | 'invalid_token'
  | 'not_found'
  | 'method_not_allowed'
  | 'payload_too_large'
  | 'unsupported_media_type'
  | 'service_unavailable'
  | 'internal';

/** One entry a field that failed validation: FastAPI's `loc`, `msg`, `type`. */
export interface FieldProblem {
  loc: (string | number)[];
  msg: string;
  type: string;
}

export class AppError extends Error {
  readonly code: ErrorCode;
  readonly details: FieldProblem[] | undefined;

  constructor(code: ErrorCode, message: string, options: { details?: FieldProblem[]; cause?: unknown } = {}) {
    super(message, { cause: options.cause });
    this.name = 'AppError';
    this.code = code;
    this.details = options.details;
  }
}
