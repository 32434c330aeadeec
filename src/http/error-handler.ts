import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { AppError, type ErrorCode, type FieldProblem, type UnavailableReason } from '../errors.ts';
import type { RefusalPacer } from './refusal-pacing.ts';
import { loggedPath } from './request-logger.ts';
import { SECURITY_HEADERS } from './security-headers.ts';

export type ErrorStyle = 'fastapi' | 'oauth';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** How errors are written: FastAPI `detail` (default) or RFC 6749 §5.2 (`oauth`). */
    errorStyle?: ErrorStyle;
  }
}

export interface RenderedError {
  status: number;
  body: Record<string, unknown>;
  headers?: Record<string, string>;
}

const oauthError = (error: string, description: string): RenderedError => ({
  status: 400,
  // `detail` keeps FastAPI-era clients that read it working; error_description stays within RFC 6749's charset.
  body: { error, error_description: description, detail: description },
});

/** A request refused as malformed or unreadable: RFC 6749 §5.2's invalid_request on the token endpoint. */
const refusedRequest =
  (status: number) =>
  (error: AppError, style: ErrorStyle): RenderedError =>
    style === 'oauth'
      ? { ...oauthError('invalid_request', error.message), status }
      : { status, body: { detail: error.message } };

const OVERLOADED = 'The server is busy; retry in a second.';
// About how long a PostgreSQL restart or fail-over takes; the pool reconnects by itself once it is back.
const DATABASE_RETRY_AFTER_SECONDS = 5;
const TOO_MANY_ATTEMPTS = 'Too many attempts; retry later.';
const CROSS_SITE = 'Cross-site request refused';
// Pydantic's wording: "at least 1 character", "at least 2 characters".
const characters = (limit: unknown) => (limit === 1 ? 'character' : 'characters');

// The one table from error code to HTTP response.
const responses: Record<ErrorCode, (error: AppError, style: ErrorStyle) => RenderedError> = {
  validation_failed: (error, style) =>
    style === 'oauth'
      ? oauthError('invalid_request', 'The request is missing a parameter or has a malformed one')
      : { status: 422, body: { detail: error.details ?? [] } },
  username_taken: (error) => ({ status: 409, body: { detail: error.message, code: 'username_taken' } }),
  email_taken: (error) => ({ status: 409, body: { detail: error.message, code: 'email_taken' } }),
  conversation_full: (error) => ({ status: 409, body: { detail: error.message, code: 'conversation_full' } }),
  invalid_password: (error) => ({ status: 400, body: { detail: error.message, code: 'invalid_password' } }),
  malformed_request: refusedRequest(400),
  invalid_request: (error) => oauthError('invalid_request', error.message),
  invalid_grant: (error) => oauthError('invalid_grant', error.message),
  unsupported_grant_type: (error) => oauthError('unsupported_grant_type', error.message),
  invalid_scope: (error) => oauthError('invalid_scope', error.message),
  // RFC 6585 §4. RFC 6749 §5.2 has no throttling code; its authorization endpoint's temporarily_unavailable
  // (§4.1.2.1) is borrowed, as peers do. The same answer for a known and an unknown username.
  temporarily_unavailable: (error, style) => ({
    ...(style === 'oauth'
      ? oauthError('temporarily_unavailable', TOO_MANY_ATTEMPTS)
      : { body: { detail: TOO_MANY_ATTEMPTS } }),
    status: 429,
    headers: {
      'retry-after': String(Math.max(1, Math.ceil(error.retryAfterSeconds ?? 1))),
      'cache-control': 'no-store',
    },
  }),
  // Auth0's shape for a login that needs its second factor: the password matched, no tokens yet.
  mfa_required: (error) => {
    const rendered = oauthError('mfa_required', 'A second factor is required');
    return {
      status: 403,
      body: { ...rendered.body, mfa_token: error.mfaToken, mfa_methods: error.mfaMethods ?? [] },
    };
  },
  mfa_already_enrolled: (error) => ({
    status: 409,
    body: { detail: error.message, code: 'mfa_already_enrolled' },
  }),
  // A wrong, replayed or locked-out code on an account route: one answer for all three.
  invalid_second_factor: (error) => ({
    status: 400,
    body: { detail: error.message, code: 'invalid_second_factor' },
  }),
  // A password reset of an account with second factors, sent without one: its page asks for one. Its caller holds the
  // mailed link, not a session, so the answer names the methods, and the reset page offers only what the account has.
  second_factor_required: (error) => ({
    status: 400,
    body: {
      detail: error.message,
      code: 'second_factor_required',
      ...(error.mfaMethods ? { mfa_methods: error.mfaMethods } : {}),
    },
  }),
  // RFC 9470 §3: a change of second factors asks for more authentication than the request carries (the password, a
  // second factor, or a login with one at most max_age seconds ago). The session stays valid: only this change waits.
  insufficient_user_authentication: (error) => ({
    status: 401,
    body: { detail: error.message, code: 'insufficient_user_authentication' },
    headers: {
      'www-authenticate': `Bearer error="insufficient_user_authentication", error_description="${error.message}"${
        error.maxAgeSeconds === undefined ? '' : `, max_age="${error.maxAgeSeconds}"`
      }`,
    },
  }),
  passkey_limit: (error) => ({ status: 409, body: { detail: error.message, code: 'passkey_limit' } }),
  // A registration response that does not verify (wrong origin, RP ID, challenge, signature, no UV).
  invalid_passkey: (error) => ({ status: 400, body: { detail: error.message, code: 'invalid_passkey' } }),
  // Passkey options asked for an account that has no usable passkey (a reset link's account).
  no_passkey: (error) => ({ status: 400, body: { detail: error.message, code: 'no_passkey' } }),
  // RFC 6750 §3: no error attribute when the request carried no token at all.
  missing_token: () => ({
    status: 401,
    body: { detail: 'Not authenticated' },
    headers: { 'www-authenticate': 'Bearer' },
  }),
  // RFC 6750 §3.1: a malformed request (here, two Authorization headers) is invalid_request, 400.
  malformed_authorization: () => ({
    status: 400,
    body: { detail: 'Malformed Authorization header' },
    headers: { 'www-authenticate': 'Bearer error="invalid_request"' },
  }),
  // The web client's CSRF rule (http/web-client.ts): refused before anything was read or changed.
  cross_site_request: (_error, style) =>
    style === 'oauth'
      ? { ...oauthError('invalid_request', CROSS_SITE), status: 403 }
      : { status: 403, body: { detail: CROSS_SITE } },
  invalid_token: () => ({
    status: 401,
    body: { detail: 'Could not validate credentials' },
    headers: { 'www-authenticate': 'Bearer error="invalid_token"' },
  }),
  // A write for an account deleted since its request was authenticated: a token of a deleted account, as above; on
  // the token endpoint, the grant of one.
  account_gone: (_error, style) =>
    style === 'oauth'
      ? oauthError('invalid_grant', 'The account no longer exists')
      : {
          status: 401,
          body: { detail: 'Could not validate credentials' },
          headers: { 'www-authenticate': 'Bearer error="invalid_token"' },
        },
  // A mailed link's token (email verification, password reset): bad, spent, expired or stale, told apart from nothing.
  invalid_one_time_token: (error) => oauthError('invalid_token', error.message),
  // RFC 6750 §3.1: only for a valid token, naming the scope the route needs; FastAPI's security-scopes wording.
  insufficient_scope: (error) => ({
    status: 403,
    body: { detail: 'Not enough permissions' },
    headers: {
      'www-authenticate': `Bearer error="insufficient_scope", scope="${error.requiredScope ?? ''}"`,
    },
  }),
  not_found: () => ({ status: 404, body: { detail: 'Not Found' } }),
  method_not_allowed: () => ({ status: 405, body: { detail: 'Method Not Allowed' } }),
  // What Node's parser refuses before any route runs (http/unrouted-requests.ts).
  request_timeout: refusedRequest(408),
  expectation_failed: refusedRequest(417),
  uri_too_long: refusedRequest(414),
  headers_too_large: refusedRequest(431),
  http_version_not_supported: refusedRequest(505),
  not_implemented: (error) => ({ status: 501, body: { detail: error.message } }),
  precondition_failed: refusedRequest(412),
  // Content-Range (the representation's length) is set by the documentation handler, which knows it.
  range_not_satisfiable: () => ({ status: 416, body: { detail: 'Range Not Satisfiable' } }),
  payload_too_large: (_error, style) =>
    style === 'oauth'
      ? { ...oauthError('invalid_request', 'The request body is too large'), status: 413 }
      : { status: 413, body: { detail: 'Request body is too large' } },
  unsupported_media_type: (error, style) =>
    style === 'oauth'
      ? oauthError(
          'invalid_request',
          'The request body must be a form (application/x-www-form-urlencoded; multipart/form-data on /token) or JSON',
        )
      : { status: 415, body: { detail: error.message } },
  unstorable_value: (error, style) =>
    style === 'oauth'
      ? oauthError('invalid_request', 'The request is missing a parameter or has a malformed one')
      : { status: 422, body: { detail: [{ loc: ['body'], msg: error.message, type: 'value_error' }] } },
  // An outage (the database): the raiser's advice, in the token endpoint's shape there (RFC 6749 §4.1.2.1's code).
  service_unavailable: (error, style) => ({
    ...(style === 'oauth'
      ? oauthError('temporarily_unavailable', error.message)
      : { body: { detail: error.message } }),
    status: 503,
    headers: { 'retry-after': String(DATABASE_RETRY_AFTER_SECONDS) },
  }),
  // Load shed before any work (a full hash queue, a stalled event loop): nothing was checked, so a retry is safe.
  overloaded: (error, style) => ({
    ...(style === 'oauth'
      ? oauthError('temporarily_unavailable', OVERLOADED)
      : { body: { detail: OVERLOADED } }),
    status: 503,
    headers: { 'retry-after': String(Math.max(1, Math.ceil(error.retryAfterSeconds ?? 1))) },
  }),
  internal: () => ({ status: 500, body: { detail: 'Internal Server Error' } }),
};

/** Fastify's own errors (body parsing, schema validation) as AppErrors; anything unrecognised is internal. */
export function toAppError(error: FastifyError | Error): AppError {
  if (error instanceof AppError) return error;
  const fastifyError = error as FastifyError;
  if (fastifyError.validation) {
    return new AppError('validation_failed', 'Invalid request', {
      details: firstPerField(
        fastifyError.validation.map((problem) => toFieldProblem(problem, fastifyError.validationContext)),
      ),
    });
  }
  switch (fastifyError.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new AppError('payload_too_large', 'Request body is too large', { cause: error });
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new AppError('unsupported_media_type', 'Unsupported Media Type', { cause: error });
    // Starlette, under the FastAPI seed, leaves a broken escape undecoded and answers 404: no route can match it.
    case 'FST_ERR_BAD_URL':
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return new AppError('not_found', 'Not Found', { cause: error });
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new AppError('validation_failed', 'Empty body', {
        details: [{ loc: ['body'], msg: 'Field required', type: 'missing' }],
        cause: error,
      });
  }
  const status = fastifyError.statusCode;
  if (status !== undefined && status >= 400 && status < 500) {
    // Malformed JSON, forbidden __proto__ keys, bad Content-Length and similar client mistakes.
    const { jsonErrorOffset = 0 } = error as { jsonErrorOffset?: number };
    return new AppError('validation_failed', 'Malformed body', {
      details: [{ loc: ['body', jsonErrorOffset], msg: 'JSON decode error', type: 'json_invalid' }],
      cause: error,
    });
  }
  return new AppError('internal', 'Internal Server Error', { cause: error });
}

/** Returns the status, body and headers the error table gives this error in this style. */
export function renderError(error: AppError, style: ErrorStyle): RenderedError {
  return responses[error.code](error, style);
}

const unavailableReasons = new WeakMap<FastifyRequest, UnavailableReason>();
const refusalsLogged = new WeakSet<FastifyRequest>();

/** Whether the answer was logged as a refusal already, in one line that says all the request log line would. */
export function refusalLogged(request: FastifyRequest): boolean {
  return refusalsLogged.has(request);
}

/** Returns why this request was answered 503, when it was and the raiser said why. */
export function unavailableReasonOf(request: FastifyRequest): UnavailableReason | undefined {
  return unavailableReasons.get(request);
}

export function sendError(error: AppError, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const style = request.routeOptions.config?.errorStyle ?? 'fastapi';
  const rendered = renderError(error, style);
  if (rendered.status === 503) {
    if (error.unavailableReason) unavailableReasons.set(request, error.unavailableReason);
    // Expected under overload or an outage, and possibly many a second: one line, no stack.
    const reason = error.cause instanceof Error ? error.cause.message : undefined;
    request.log.warn(
      { code: error.code, reason, method: request.method, path: loggedPath(request.url), ip: request.ip },
      'request refused: unavailable',
    );
    refusalsLogged.add(request);
    rendered.body.request_id = request.id;
  } else if (rendered.status === 501 || rendered.status === 505) {
    // What the client asked of HTTP, not a failure here: logged by the response hook as the 4xx are, with no stack
    // that any client could write into the error log at will.
    rendered.body.request_id = request.id;
  } else if (rendered.status >= 500) {
    request.log.error({ err: error.cause ?? error }, 'request failed');
    rendered.body.request_id = request.id;
  } else if (error.code === 'account_gone') {
    // A race with a deletion, or a write naming a row that never was (a bug): the constraint tells which.
    const { constraint } = (error.cause ?? {}) as { constraint?: unknown };
    request.log.warn(
      { code: error.code, constraint: typeof constraint === 'string' ? constraint : undefined },
      'request refused: its account is gone',
    );
  } else if (error.cause) {
    // Only the cause's code: parser messages quote the body, which may hold a password.
    const causeCode = (error.cause as { code?: unknown }).code;
    request.log.debug(
      { code: error.code, cause: typeof causeCode === 'string' ? causeCode : undefined },
      'request refused',
    );
  }
  if (style === 'oauth') reply.header('pragma', 'no-cache');
  // An error is JSON wherever it happens, under /docs too: it gets the API's policy, not the page's.
  reply.header('content-security-policy', SECURITY_HEADERS['content-security-policy']);
  return reply
    .code(rendered.status)
    .headers(rendered.headers ?? {})
    .type('application/json; charset=utf-8')
    .send(rendered.body);
}

export function errorHandler(error: FastifyError, request: FastifyRequest, reply: FastifyReply) {
  return sendError(toAppError(error), request, reply);
}

// A 503 of a full queue (hashes, strength estimates) or a stalled loop refused at once; one of a queue timeout has
// already waited, and a failing breach check is an outage, not a burst.
export const isPacedRefusal = (error: AppError): boolean =>
  error.code === 'temporarily_unavailable' ||
  error.unavailableReason === 'hash_queue_full' ||
  error.unavailableReason === 'overloaded' ||
  (error.code === 'overloaded' && error.unavailableReason === 'password_check_unavailable');

/** The app's error handler: refusals past the pacer's budget are held before they are sent (http/refusal-pacing.ts). */
export function pacedErrorHandler(pacer: RefusalPacer) {
  return (error: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
    const appError = toAppError(error);
    const delayMs = isPacedRefusal(appError) ? pacer.delayFor() : 0;
    if (delayMs === 0) return sendError(appError, request, reply);
    return pacer.hold(delayMs).then(() => sendError(appError, request, reply));
  };
}

// @fastify/send reports through http-errors classes, which carry no `code`: a path it cannot decode or that holds a NUL
// byte (400), a dotfile or a climbing path (403), a failed precondition (412), an unsatisfiable range (416); the first
// two answer as an unknown path.
const DOCUMENTATION_ASSET_REFUSALS = new Set(['BadRequestError', 'ForbiddenError']);

/** The error handler of the documentation scope: the asset server's refusals answer as an unknown path, 404. */
export function documentationErrorHandler(error: FastifyError, request: FastifyRequest, reply: FastifyReply) {
  // The file exists: a failed precondition or range is told as such (RFC 9110 §13.1.1, §14.1.1), not as a 404.
  if (error.name === 'PreconditionFailedError')
    return sendError(
      new AppError('precondition_failed', 'Precondition Failed', { cause: error }),
      request,
      reply,
    );
  if (error.name === 'RangeNotSatisfiableError') {
    const contentRange = (error as { headers?: Record<string, string> }).headers?.['Content-Range'];
    if (contentRange) reply.header('content-range', contentRange);
    return sendError(
      new AppError('range_not_satisfiable', 'Range Not Satisfiable', { cause: error }),
      request,
      reply,
    );
  }
  const isRefusal =
    error.code === 'FST_STATIC_FORBIDDEN_PATH' ||
    (DOCUMENTATION_ASSET_REFUSALS.has(error.name) && (error.statusCode ?? 500) < 500);
  if (isRefusal) return sendError(new AppError('not_found', 'Not Found', { cause: error }), request, reply);
  return errorHandler(error, request, reply);
}

// A pattern no person reads as a rule (a passkey name's: Unicode classes and a lookahead) said in words instead.
const PATTERN_MESSAGES = new Map<string, string>();

/** Makes a 422 for `pattern` say `message` rather than quote the pattern (FastAPI's wording). */
export function describePattern(pattern: string, message: string): void {
  PATTERN_MESSAGES.set(pattern, message);
}

interface AjvProblem {
  keyword: string;
  instancePath: string;
  params: Record<string, unknown>;
  message?: string;
  // Ajv's verbose mode: the value refused, and the schema of its field.
  data?: unknown;
  parentSchema?: { format?: unknown };
}

// pydantic reports one problem per field, the first it meets: a fractional age over the maximum is only not an integer.
function firstPerField(problems: FieldProblem[]): FieldProblem[] {
  const seen = new Set<string>();
  return problems.filter((problem) => {
    const key = JSON.stringify(problem.loc);
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

// pydantic's own limit: a float past a signed 64-bit integer is no integer it will parse.
const LARGEST_INTEGER_FLOAT = 2 ** 63;

/** pydantic's words for a value that is not an integer: a string, a number with a fraction and anything else differ. */
function notAnInteger(loc: (string | number)[], value: unknown): FieldProblem {
  if (typeof value === 'string')
    return {
      loc,
      msg: 'Input should be a valid integer, unable to parse string as an integer',
      type: 'int_parsing',
    };
  // NaN and ±Infinity, which a body may hold as Python's json module reads it (http/body-parsers.ts).
  if (typeof value === 'number' && !Number.isFinite(value))
    return { loc, msg: 'Input should be a finite number', type: 'finite_number' };
  if (typeof value === 'number' && Math.abs(value) >= LARGEST_INTEGER_FLOAT)
    return {
      loc,
      msg: 'Unable to parse input string as an integer, exceeded maximum size',
      type: 'int_parsing_size',
    };
  if (typeof value === 'number')
    return {
      loc,
      msg: 'Input should be a valid integer, got a number with a fractional part',
      type: 'int_from_float',
    };
  return { loc, msg: 'Input should be a valid integer', type: 'int_type' };
}

// FastAPI's list of choices: 'a', 'b' or 'c'.
function choices(values: unknown[]): string {
  const quoted = values.map((value) => `'${value}'`);
  return quoted.length < 2 ? quoted.join('') : `${quoted.slice(0, -1).join(', ')} or ${quoted.at(-1)}`;
}

const FASTAPI_LOCATIONS: Record<string, string> = { querystring: 'query', params: 'path', headers: 'header' };

function toFieldProblem(problem: AjvProblem, context: string | undefined): FieldProblem {
  // FastAPI's names for where a value came from: Fastify says querystring, params and headers.
  const loc: (string | number)[] = [FASTAPI_LOCATIONS[context ?? 'body'] ?? context ?? 'body'];
  for (const part of problem.instancePath.split('/').slice(1)) {
    const key = part.replace(/~1/g, '/').replace(/~0/g, '~');
    loc.push(/^\d+$/.test(key) ? Number(key) : key);
  }
  const { keyword, params } = problem;
  switch (keyword) {
    case 'required':
      return { loc: [...loc, String(params.missingProperty)], msg: 'Field required', type: 'missing' };
    case 'type':
      // No body at all (nor a Content-Type; Fastify's body is then null): FastAPI reads an empty body as none, and a
      // required one is missing.
      if (loc.length === 1 && problem.data == null) return { loc, msg: 'Field required', type: 'missing' };
      if (loc.length === 1)
        return {
          loc,
          msg: 'Input should be a valid dictionary or object to extract fields from',
          type: 'model_attributes_type',
        };
      if (params.type === 'integer') return notAnInteger(loc, problem.data);
      return { loc, msg: `Input should be a valid ${params.type}`, type: `${params.type}_type` };
    case 'minimum':
      if (typeof problem.data === 'number' && problem.data <= -LARGEST_INTEGER_FLOAT)
        return notAnInteger(loc, problem.data);
      return {
        loc,
        msg: `Input should be greater than or equal to ${params.limit}`,
        type: 'greater_than_equal',
      };
    case 'maximum':
      // JSON.parse makes 1e300 an integer; pydantic reads it as a float, too large to be one.
      if (typeof problem.data === 'number' && problem.data >= LARGEST_INTEGER_FLOAT)
        return notAnInteger(loc, problem.data);
      return { loc, msg: `Input should be less than or equal to ${params.limit}`, type: 'less_than_equal' };
    case 'minLength':
      return {
        loc,
        msg: `String should have at least ${params.limit} ${characters(params.limit)}`,
        type: 'string_too_short',
      };
    case 'maxLength':
      return {
        loc,
        // A new password's limit is the password rule's, told in the rule's words at any length.
        msg:
          problem.parentSchema?.format === 'password'
            ? `Password must have at most ${params.limit} characters`
            : `String should have at most ${params.limit} ${characters(params.limit)}`,
        type: 'string_too_long',
      };
    case 'enum':
      return { loc, msg: `Input should be ${choices(params.allowedValues as unknown[])}`, type: 'enum' };
    case 'pattern':
      return {
        loc,
        msg:
          PATTERN_MESSAGES.get(String(params.pattern)) ?? `String should match pattern '${params.pattern}'`,
        type: 'string_pattern_mismatch',
      };
    case 'format':
      return {
        loc,
        msg:
          params.format === 'email'
            ? 'value is not a valid email address'
            : `Input should be a valid ${params.format}`,
        type: 'value_error',
      };
    default:
      return { loc, msg: problem.message ?? 'Invalid value', type: keyword };
  }
}
