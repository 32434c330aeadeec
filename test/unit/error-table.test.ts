import { describe, expect, it } from 'vitest';
import { AppError, type ErrorCode, type FieldProblem, withoutStackTrace } from '../../src/errors.ts';
import { type ErrorStyle, type RenderedError, renderError } from '../../src/http/error-handler.ts';

const STYLES: ErrorStyle[] = ['fastapi', 'oauth'];

/** What the code that raises an error says; the table passes it through for some codes only. */
const MESSAGE = 'Said by the raiser 7f3a';
const MFA_TOKEN = 'mfa-token-3c9';
const MFA_METHODS = ['otp', 'recovery_code'];
const REQUIRED_SCOPE = 'conversation:write';
const DETAILS: FieldProblem[] = [
  { loc: ['body', 'age'], msg: 'Input should be less than or equal to 150', type: 'less_than_equal' },
  { loc: ['body', 'tags', 0], msg: 'Input should be a valid string', type: 'string_type' },
];

/** A response as the client sees it: no headers is the same as an empty set of headers. */
interface Expected {
  status: number;
  body: Record<string, unknown>;
  headers: Record<string, string>;
}

const both = (expected: Expected): Record<ErrorStyle, Expected> => ({ fastapi: expected, oauth: expected });
const detail = (status: number, text: string, headers: Record<string, string> = {}): Expected => ({
  status,
  body: { detail: text },
  headers,
});
const oauth = (error: string, description: string, status = 400): Expected => ({
  status,
  body: { error, error_description: description, detail: description },
  headers: {},
});

// Typed by ErrorCode: a code added to src/errors.ts without an entry here fails the typecheck.
const TABLE: Record<ErrorCode, Record<ErrorStyle, Expected>> = {
  validation_failed: {
    fastapi: { status: 422, body: { detail: DETAILS }, headers: {} },
    oauth: oauth('invalid_request', 'The request is missing a parameter or has a malformed one'),
  },
  username_taken: both({ status: 409, body: { detail: MESSAGE, code: 'username_taken' }, headers: {} }),
  email_taken: both({ status: 409, body: { detail: MESSAGE, code: 'email_taken' }, headers: {} }),
  conversation_full: both({ status: 409, body: { detail: MESSAGE, code: 'conversation_full' }, headers: {} }),
  invalid_password: both({ status: 400, body: { detail: MESSAGE, code: 'invalid_password' }, headers: {} }),
  mfa_already_enrolled: both({
    status: 409,
    body: { detail: MESSAGE, code: 'mfa_already_enrolled' },
    headers: {},
  }),
  second_factor_required: both({
    status: 400,
    body: { detail: MESSAGE, code: 'second_factor_required' },
    headers: {},
  }),
  // RFC 9470 §3; the max_age is the one the raiser gave (see raise()).
  insufficient_user_authentication: both({
    status: 401,
    body: { detail: MESSAGE, code: 'insufficient_user_authentication' },
    headers: {
      'www-authenticate': `Bearer error="insufficient_user_authentication", error_description="${MESSAGE}", max_age="600"`,
    },
  }),
  invalid_second_factor: both({
    status: 400,
    body: { detail: MESSAGE, code: 'invalid_second_factor' },
    headers: {},
  }),
  passkey_limit: both({ status: 409, body: { detail: MESSAGE, code: 'passkey_limit' }, headers: {} }),
  invalid_passkey: both({ status: 400, body: { detail: MESSAGE, code: 'invalid_passkey' }, headers: {} }),
  no_passkey: both({ status: 400, body: { detail: MESSAGE, code: 'no_passkey' }, headers: {} }),
  malformed_request: { fastapi: detail(400, MESSAGE), oauth: oauth('invalid_request', MESSAGE) },
  invalid_request: both(oauth('invalid_request', MESSAGE)),
  invalid_grant: both(oauth('invalid_grant', MESSAGE)),
  unsupported_grant_type: both(oauth('unsupported_grant_type', MESSAGE)),
  invalid_scope: both(oauth('invalid_scope', MESSAGE)),
  // Throttling: /token speaks RFC 6749, /register/ FastAPI; neither answer may be cached.
  temporarily_unavailable: {
    fastapi: detail(429, 'Too many attempts; retry later.', {
      'retry-after': '3',
      'cache-control': 'no-store',
    }),
    oauth: {
      ...oauth('temporarily_unavailable', 'Too many attempts; retry later.', 429),
      headers: { 'retry-after': '3', 'cache-control': 'no-store' },
    },
  },
  mfa_required: both({
    status: 403,
    body: {
      ...oauth('mfa_required', 'A second factor is required').body,
      mfa_token: MFA_TOKEN,
      mfa_methods: MFA_METHODS,
    },
    headers: {},
  }),
  missing_token: both(detail(401, 'Not authenticated', { 'www-authenticate': 'Bearer' })),
  malformed_authorization: both(
    detail(400, 'Malformed Authorization header', { 'www-authenticate': 'Bearer error="invalid_request"' }),
  ),
  cross_site_request: {
    fastapi: detail(403, 'Cross-site request refused'),
    oauth: oauth('invalid_request', 'Cross-site request refused', 403),
  },
  invalid_token: both(
    detail(401, 'Could not validate credentials', { 'www-authenticate': 'Bearer error="invalid_token"' }),
  ),
  // A write for an account deleted meanwhile: as a token of a deleted account; on the token endpoint, a bad grant.
  account_gone: {
    fastapi: detail(401, 'Could not validate credentials', {
      'www-authenticate': 'Bearer error="invalid_token"',
    }),
    oauth: oauth('invalid_grant', 'The account no longer exists'),
  },
  // A mailed link's token: 400 in both styles, never a Bearer challenge (no Authorization header was involved).
  invalid_one_time_token: both(oauth('invalid_token', MESSAGE)),
  // RFC 6750 §3.1: a valid token without the scope the route needs; the body is FastAPI's security-scopes answer.
  insufficient_scope: both(
    detail(403, 'Not enough permissions', {
      'www-authenticate': `Bearer error="insufficient_scope", scope="${REQUIRED_SCOPE}"`,
    }),
  ),
  not_found: both(detail(404, 'Not Found')),
  request_timeout: { fastapi: detail(408, MESSAGE), oauth: oauth('invalid_request', MESSAGE, 408) },
  expectation_failed: { fastapi: detail(417, MESSAGE), oauth: oauth('invalid_request', MESSAGE, 417) },
  uri_too_long: { fastapi: detail(414, MESSAGE), oauth: oauth('invalid_request', MESSAGE, 414) },
  headers_too_large: { fastapi: detail(431, MESSAGE), oauth: oauth('invalid_request', MESSAGE, 431) },
  http_version_not_supported: {
    fastapi: detail(505, MESSAGE),
    oauth: oauth('invalid_request', MESSAGE, 505),
  },
  method_not_allowed: both(detail(405, 'Method Not Allowed')),
  not_implemented: both(detail(501, MESSAGE)),
  precondition_failed: { fastapi: detail(412, MESSAGE), oauth: oauth('invalid_request', MESSAGE, 412) },
  range_not_satisfiable: both(detail(416, 'Range Not Satisfiable')),
  payload_too_large: {
    fastapi: detail(413, 'Request body is too large'),
    oauth: oauth('invalid_request', 'The request body is too large', 413),
  },
  unsupported_media_type: {
    fastapi: detail(415, MESSAGE),
    oauth: oauth(
      'invalid_request',
      'The request body must be a form (application/x-www-form-urlencoded; multipart/form-data on /token) or JSON',
    ),
  },
  unstorable_value: {
    fastapi: {
      status: 422,
      body: { detail: [{ loc: ['body'], msg: MESSAGE, type: 'value_error' }] },
      headers: {},
    },
    oauth: oauth('invalid_request', 'The request is missing a parameter or has a malformed one'),
  },
  service_unavailable: {
    fastapi: detail(503, MESSAGE, { 'retry-after': '5' }),
    oauth: { ...oauth('temporarily_unavailable', MESSAGE, 503), headers: { 'retry-after': '5' } },
  },
  overloaded: {
    fastapi: detail(503, 'The server is busy; retry in a second.', { 'retry-after': '1' }),
    oauth: {
      ...oauth('temporarily_unavailable', 'The server is busy; retry in a second.', 503),
      headers: { 'retry-after': '1' },
    },
  },
  internal: both(detail(500, 'Internal Server Error')),
};

const CODES = Object.keys(TABLE) as ErrorCode[];
const CASES = CODES.flatMap((code) => STYLES.map((style) => [code, style] as const));

/** An error as it is raised: the message, a cause, and what its code carries (details, retry delay, MFA token). */
function raise(code: ErrorCode, cause: unknown = new Error('low-level failure')): AppError {
  return new AppError(code, MESSAGE, {
    cause,
    ...(code === 'validation_failed' ? { details: DETAILS } : {}),
    ...(code === 'temporarily_unavailable' ? { retryAfterSeconds: 2.5 } : {}),
    ...(code === 'overloaded' ? { retryAfterSeconds: 0.2 } : {}),
    ...(code === 'mfa_required' ? { mfaToken: MFA_TOKEN, mfaMethods: MFA_METHODS } : {}),
    ...(code === 'insufficient_scope' ? { requiredScope: REQUIRED_SCOPE } : {}),
    ...(code === 'insufficient_user_authentication' ? { maxAgeSeconds: 600 } : {}),
  });
}

function render(code: ErrorCode, style: ErrorStyle, cause?: unknown): RenderedError {
  return renderError(raise(code, cause), style);
}

/** The response's headers with lower-case names, as HTTP compares them. */
function headersOf(rendered: RenderedError): Record<string, string> {
  return Object.fromEntries(Object.entries(rendered.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
}

/** RFC 6750 §3: `Bearer`, optionally a realm, and no error attribute. */
const BARE_BEARER = /^Bearer(\s+realm="[^"]*")?$/;
/** RFC 6750 §3: a Bearer challenge naming the given error code. */
const bearerWithError = (error: string) => new RegExp(`^Bearer\\s+(realm="[^"]*",\\s*)?error="${error}"`);
/** RFC 6749 §5.2: error_description is limited to %x20-21 / %x23-5B / %x5D-7E. */
const OAUTH_DESCRIPTION = /^[\x20\x21\x23-\x5B\x5D-\x7E]*$/;
const OAUTH_ERRORS = [
  'invalid_request',
  'invalid_client',
  'invalid_grant',
  'unauthorized_client',
  'unsupported_grant_type',
  'invalid_scope',
  'temporarily_unavailable', // RFC 6749 §4.1.2.1
  'mfa_required', // Auth0's, for a login waiting for its second factor
  'invalid_token', // RFC 6750 §3.1's code, for a mailed link's token (email verification, password reset)
];

describe('the error table', () => {
  it.each(CASES)('answers %s in the %s style with its status, body and headers', (code, style) => {
    const rendered = render(code, style);
    expect({ status: rendered.status, body: rendered.body, headers: headersOf(rendered) }).toEqual(
      TABLE[code][style],
    );
  });

  it('gives each rendering a body of its own, so that what one response adds is not in the next', () => {
    for (const [code, style] of CASES) {
      render(code, style).body.request_id = 'req-1';
      expect(render(code, style).body, `${code} (${style})`).not.toHaveProperty('request_id');
    }
  });
});

describe('the Bearer challenge (RFC 6750 §3)', () => {
  it.each(STYLES)('challenges a request without a token with a bare Bearer and 401 (%s style)', (style) => {
    const rendered = render('missing_token', style);
    expect(rendered.status).toBe(401);
    expect(headersOf(rendered)['www-authenticate']).toMatch(BARE_BEARER);
  });

  it.each(STYLES)('answers an invalid token 401 with error="invalid_token" (%s style)', (style) => {
    const rendered = render('invalid_token', style);
    expect(rendered.status).toBe(401);
    expect(headersOf(rendered)['www-authenticate']).toMatch(bearerWithError('invalid_token'));
  });

  it.each(STYLES)(
    'answers a malformed Authorization header 400 with error="invalid_request" (%s style)',
    (style) => {
      const rendered = render('malformed_authorization', style);
      expect(rendered.status).toBe(400);
      expect(headersOf(rendered)['www-authenticate']).toMatch(bearerWithError('invalid_request'));
    },
  );

  it.each(STYLES)(
    'answers a token without the needed scope 403 with error="insufficient_scope" and the scope (%s style)',
    (style) => {
      const rendered = render('insufficient_scope', style);
      expect(rendered.status).toBe(403);
      expect(headersOf(rendered)['www-authenticate']).toMatch(bearerWithError('insufficient_scope'));
      expect(headersOf(rendered)['www-authenticate']).toContain(`scope="${REQUIRED_SCOPE}"`);
    },
  );

  it('sends a Bearer challenge with every 401, and only with the answers about the bearer token and its login', () => {
    const challenged = new Set<ErrorCode>([
      'missing_token',
      'invalid_token',
      'malformed_authorization',
      'insufficient_scope',
      'insufficient_user_authentication',
    ]);
    for (const [code, style] of CASES) {
      const rendered = render(code, style);
      const challenge = headersOf(rendered)['www-authenticate'];
      if (rendered.status === 401) expect(challenge, `${code} (${style})`).toMatch(/^Bearer\b/);
      if (challenged.has(code)) expect(challenge, `${code} (${style})`).toMatch(/^Bearer\b/);
      // The bearer token's account is gone: challenged as an invalid token, except as the token endpoint's grant.
      else if (code === 'account_gone' && style === 'fastapi') expect(challenge).toMatch(/^Bearer\b/);
      else expect(challenge, `${code} (${style})`).toBeUndefined();
    }
  });
});

describe('validation failures', () => {
  it('passes the field problems through unchanged as the FastAPI detail list', () => {
    const rendered = render('validation_failed', 'fastapi');
    expect(rendered.status).toBe(422);
    expect(rendered.body).toEqual({ detail: DETAILS });
  });

  it('answers a validation failure without field problems with an empty FastAPI detail list', () => {
    const rendered = renderError(new AppError('validation_failed', MESSAGE), 'fastapi');
    expect(rendered.status).toBe(422);
    expect(rendered.body).toEqual({ detail: [] });
  });

  it('answers a validation failure in the OAuth style as invalid_request, without the field problems', () => {
    const rendered = render('validation_failed', 'oauth');
    expect(rendered.status).toBe(400);
    expect(rendered.body.error).toBe('invalid_request');
    const text = JSON.stringify(rendered);
    for (const problem of DETAILS) expect(text).not.toContain(problem.msg);
  });
});

describe('OAuth-shaped bodies (RFC 6749 §5.2)', () => {
  const oauthShaped = CASES.filter(([code, style]) => 'error' in TABLE[code][style].body);

  it('carry a registered error code, an error_description in its character set, and the same text as detail', () => {
    for (const [code, style] of oauthShaped) {
      const { body } = render(code, style);
      const what = `${code} (${style})`;
      expect(OAUTH_ERRORS, what).toContain(body.error);
      expect(body.error_description, what).toMatch(OAUTH_DESCRIPTION);
      expect(body.detail, what).toBe(body.error_description);
    }
  });
});

describe('server errors', () => {
  const cause = Object.assign(new Error('connect ECONNREFUSED 10.0.0.7:5432 cause-5e1'), {
    code: 'ECONNREFUSED',
    password: 'pw-of-the-cause-91c',
  });
  const traces = [cause.message, cause.password, 'ECONNREFUSED', '10.0.0.7', 'cause-5e1'];

  it.each(STYLES)(
    'answer an internal error 500 with neither its message nor its cause (%s style)',
    (style) => {
      const rendered = render('internal', style, cause);
      expect(rendered.status).toBe(500);
      const text = JSON.stringify(rendered);
      expect(text).not.toContain(MESSAGE);
      for (const trace of traces) expect(text).not.toContain(trace);
    },
  );

  it.each(STYLES)(
    'answer an outage 503 with the advice its raiser wrote, never with its cause (%s style)',
    (style) => {
      const rendered = render('service_unavailable', style, cause);
      expect(rendered.status).toBe(503);
      expect(rendered.body.detail).toBe(MESSAGE);
      const text = JSON.stringify(rendered);
      for (const trace of traces) expect(text).not.toContain(trace);
    },
  );

  it.each(STYLES)(
    "answer shed load 503 with Retry-After of at least one second and their own words, not the raiser's (%s style)",
    (style) => {
      const rendered = render('overloaded', style, cause);
      expect(rendered.status).toBe(503);
      expect(headersOf(rendered)['retry-after']).toBe('1');
      const text = JSON.stringify(rendered);
      expect(text).not.toContain(MESSAGE);
      for (const trace of traces) expect(text).not.toContain(trace);
    },
  );

  it('send Retry-After with every 503, as whole seconds', () => {
    for (const [code, style] of CASES) {
      const rendered = render(code, style);
      if (rendered.status === 503)
        expect(headersOf(rendered)['retry-after'], `${code} (${style})`).toMatch(/^[1-9]\d*$/);
    }
  });

  it('never put the cause into any response, whatever the code and style', () => {
    for (const [code, style] of CASES) {
      const text = JSON.stringify(render(code, style, cause));
      for (const trace of traces) expect(text, `${code} (${style})`).not.toContain(trace);
    }
  });
});

describe('withoutStackTrace', () => {
  it('builds an error with no stack frames, and puts the limit back even when building throws', () => {
    const limit = Error.stackTraceLimit;
    const error = withoutStackTrace(() => new AppError('overloaded', MESSAGE));
    expect(error.stack?.split('\n').filter((line) => line.trim().startsWith('at '))).toEqual([]);
    expect(Error.stackTraceLimit).toBe(limit);
    expect(() =>
      withoutStackTrace(() => {
        throw new Error('building failed');
      }),
    ).toThrow('building failed');
    expect(Error.stackTraceLimit).toBe(limit);
    expect(new Error('after').stack?.includes(' at ')).toBe(true);
  });
});
