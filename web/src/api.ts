// The page's only door to the API. The access token lives in this module's memory and nowhere else; the refresh and
// device tokens live in HttpOnly cookies that the server sets for requests carrying X-Gatehouse-Client: web.

const CLIENT_HEADER = { 'X-Gatehouse-Client': 'web' };
// Not a secret: it only saves a pointless refresh request on a visit that never signed in.
const SESSION_HINT = 'gatehouse:maybe-signed-in';

let accessToken: string | undefined;
// The account the access token is for (its `sub`): the refresh cookie belongs to the browser, not to this tab, and
// another tab's sign-in replaces it with another account's.
let subject: string | undefined;
// The account the page was last told of: a change is reported once, however many calls meet it.
let shownSubject: string | undefined;
let refreshing: Promise<boolean> | undefined;
let onSessionLost: () => void = () => {};
let onAccountChanged: () => void = () => {};

/** An answer of the API other than success, with its own message and the fields it names. */
export class ApiError extends Error {
  readonly status: number;
  /** Field name → message, from a 422's `detail` list or a 409's code. */
  readonly fields: ReadonlyMap<string, string>;
  /** The body's `code` (or OAuth `error`), for the answers the page treats on their own (a second factor asked). */
  readonly code: string | undefined;
  /** The second factors the account has, when the answer names them (a reset's second_factor_required). */
  readonly methods: readonly MfaMethod[] | undefined;

  constructor(
    status: number,
    message: string,
    fields: ReadonlyMap<string, string> = new Map(),
    code?: string,
    methods?: readonly MfaMethod[],
  ) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.fields = fields;
    this.code = code;
    this.methods = methods;
  }
}

/** The password was right and the account has a second factor: /token asks for it with a short-lived token. */
export class SecondFactorRequired extends Error {
  readonly mfaToken: string;
  readonly methods: readonly MfaMethod[];

  constructor(mfaToken: string, methods: readonly MfaMethod[]) {
    super('A second factor is required');
    this.name = 'SecondFactorRequired';
    this.mfaToken = mfaToken;
    this.methods = methods;
  }
}

export type MfaMethod = 'otp' | 'recovery_code' | 'webauthn';

const MFA_METHODS: readonly MfaMethod[] = ['otp', 'recovery_code', 'webauthn'];

interface FieldProblem {
  loc?: unknown[];
  msg?: string;
}

const FIELD_OF_CODE: Record<string, string> = {
  username_taken: 'username',
  email_taken: 'email',
  invalid_password: 'password',
  invalid_second_factor: 'otp',
};

async function bodyOf(response: Response): Promise<Record<string, unknown>> {
  try {
    return (await response.json()) as Record<string, unknown>;
  } catch {
    // Not JSON (a proxy's page, say): the status line is all there is to say.
    return {};
  }
}

async function errorOf(response: Response): Promise<ApiError> {
  return errorFrom(response, await bodyOf(response));
}

function errorFrom(response: Response, body: Record<string, unknown>): ApiError {
  const detail = body.detail;
  if (Array.isArray(detail)) {
    const fields = new Map<string, string>();
    for (const problem of detail as FieldProblem[]) {
      const name = problem.loc?.at(-1);
      if (typeof name === 'string' && problem.msg && !fields.has(name)) fields.set(name, problem.msg);
    }
    const message = [...fields].map(([name, text]) => `${name}: ${text}`).join('. ');
    return new ApiError(response.status, message || 'The request was refused.', fields);
  }
  const text =
    typeof body.error_description === 'string'
      ? body.error_description
      : typeof detail === 'string'
        ? detail
        : `The server answered ${response.status} ${response.statusText}`.trim();
  const code =
    typeof body.code === 'string' ? body.code : typeof body.error === 'string' ? body.error : undefined;
  const field = code ? FIELD_OF_CODE[code] : undefined;
  const retry = response.headers.get('retry-after');
  // A refusal for a while, of the throttle (429) or of an outage (503), says when to try again.
  const message =
    (response.status === 429 || response.status === 503) && retry && /^\d+$/.test(retry)
      ? `${text} (retry in ${retry} s)`
      : text;
  const listed = body.mfa_methods;
  const methods = Array.isArray(listed) ? MFA_METHODS.filter((method) => listed.includes(method)) : undefined;
  return new ApiError(
    response.status,
    message,
    field ? new Map([[field, message]]) : new Map(),
    code,
    methods,
  );
}

async function send(method: string, path: string, body?: unknown): Promise<Response> {
  const headers: Record<string, string> = { ...CLIENT_HEADER, Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (accessToken) headers.Authorization = `Bearer ${accessToken}`;
  return fetch(path, {
    method,
    headers,
    credentials: 'same-origin',
    cache: 'no-store',
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
}

/**
 * RFC 9470's 401: the session is fine, but this change wants more proof (the password, a second factor). A refresh
 * would not give it, and the session must not be taken for lost.
 */
const asksForMoreAuthentication = (response: Response) =>
  /\berror="insufficient_user_authentication"/.test(response.headers.get('WWW-Authenticate') ?? '');

/**
 * Calls the API as the signed-in user; an expired access token is refreshed once from the cookie. A refresh refused
 * for a while (429, 503) or not sent (the network) throws its error and leaves the session as it is; a refresh that
 * signs in another account (another tab's) sends nothing in its name and says so.
 */
export async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  // As whom the request goes: another call may refresh, even into another account, while this one is on its way.
  const sentAs = subject;
  const sentWith = accessToken;
  let response = await send(method, path, body);
  if (response.status === 401 && sentWith && !asksForMoreAuthentication(response)) {
    // Refreshed by another call meanwhile: its token serves, without a second rotation.
    if ((accessToken === sentWith || accessToken === undefined) && !(await refresh())) {
      onSessionLost();
      throw new ApiError(401, 'Your session has ended. Sign in again.');
    }
    if (subject !== sentAs) {
      if (subject !== shownSubject) {
        shownSubject = subject;
        onAccountChanged();
      }
      throw new ApiError(
        401,
        'Another account was signed in from another tab of this browser: this page now shows it, and nothing was sent.',
      );
    }
    response = await send(method, path, body);
  }
  if (!response.ok) throw await errorOf(response);
  if (response.status === 204) return undefined as T;
  return (await response.json()) as T;
}

interface TokenAnswer {
  access_token: string;
}

async function takeToken(response: Response): Promise<void> {
  if (!response.ok) {
    const body = await bodyOf(response);
    if (response.status === 403 && body.error === 'mfa_required' && typeof body.mfa_token === 'string') {
      const listed = Array.isArray(body.mfa_methods) ? body.mfa_methods : [];
      const methods = MFA_METHODS.filter((method) => listed.includes(method));
      throw new SecondFactorRequired(body.mfa_token, methods);
    }
    throw errorFrom(response, body);
  }
  accessToken = ((await response.json()) as TokenAnswer).access_token;
  subject = subjectOf(accessToken);
  localStorage.setItem(SESSION_HINT, '1');
}

/** Asks /token for tokens with one grant (JSON body); a `SecondFactorRequired` when the account has a second factor. */
async function grant(body: Record<string, string>): Promise<void> {
  accessToken = undefined;
  await takeToken(await send('POST', '/token', body));
  shownSubject = subject;
}

/**
 * The password grant in cookie mode: the refresh and device tokens arrive as HttpOnly cookies. Throws
 * `SecondFactorRequired` when the account has a second factor; its token then goes to `signInWithSecondFactor`.
 */
export function signIn(username: string, password: string): Promise<void> {
  return grant({ grant_type: 'password', username, password });
}

export const MFA_GRANT = 'urn:gatehouse:params:oauth:grant-type:mfa';
export const WEBAUTHN_GRANT = 'urn:gatehouse:params:oauth:grant-type:webauthn';

export type SecondFactor =
  | { otp: string }
  | { recovery_code: string }
  | { challenge_id: string; webauthn_response: string };

/** The MFA grant: the token of the password step and one second factor. */
export function signInWithSecondFactor(mfaToken: string, factor: SecondFactor): Promise<void> {
  return grant({ grant_type: MFA_GRANT, mfa_token: mfaToken, ...factor });
}

/** The passwordless grant: a passkey's assertion (as JSON text) for the challenge the server handed out. */
export function signInWithPasskey(challengeId: string, webauthnResponse: string): Promise<void> {
  return grant({
    grant_type: WEBAUTHN_GRANT,
    challenge_id: challengeId,
    webauthn_response: webauthnResponse,
  });
}

/** A public endpoint (no session yet): the passkey options of the sign-in steps. */
export async function callPublic<T>(method: string, path: string, body?: unknown): Promise<T> {
  const response = await send(method, path, body);
  if (!response.ok) throw await errorOf(response);
  return (await response.json()) as T;
}

/** The `sub` of an access token; the page reads its own token only to tell one account from another. */
function subjectOf(token: string): string | undefined {
  try {
    const payload = token.split('.')[1] ?? '';
    const claims = JSON.parse(atob(payload.replace(/-/g, '+').replace(/_/g, '/'))) as { sub?: unknown };
    return typeof claims.sub === 'string' ? claims.sub : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Exchanges the refresh cookie for a new access token (and a rotated cookie); false when there is no session. A
 * refusal for a while (429, 503) or a network failure says nothing of the session: it is thrown, and the access token
 * kept, so that the next call tries again.
 */
export function refresh(): Promise<boolean> {
  refreshing ??= (async () => {
    // Sent without the expired token: the cookie is the grant.
    const previous = accessToken;
    accessToken = undefined;
    try {
      await takeToken(await send('POST', '/token', { grant_type: 'refresh_token' }));
      return true;
    } catch (error) {
      // Refused (no cookie, or a session that ended): forget it.
      if (error instanceof ApiError && (error.status === 400 || error.status === 401)) {
        forget();
        return false;
      }
      accessToken = previous;
      throw error;
    } finally {
      refreshing = undefined;
    }
  })();
  return refreshing;
}

/** A reload signs back in from the cookie, without a request when this browser never signed in. */
export async function resume(): Promise<boolean> {
  if (localStorage.getItem(SESSION_HINT) === null) return false;
  const resumed = await refresh();
  shownSubject = subject;
  return resumed;
}

/** Drops the access token; the server clears the cookies of the requests that end a session. */
export function forget(): void {
  accessToken = undefined;
  subject = undefined;
  shownSubject = undefined;
  localStorage.removeItem(SESSION_HINT);
}

export function whenSessionLost(handler: () => void): void {
  onSessionLost = handler;
}

/** `handler` runs when a refresh brought another account's tokens: the page must show that account now. */
export function whenAccountChanged(handler: () => void): void {
  onAccountChanged = handler;
}

export interface User {
  id: number;
  username: string;
  email: string;
  /** Absent from servers older than issue 13: the page then says nothing about verification. */
  email_verified?: boolean;
  /** The new address of a change that waits for its link to be opened. */
  pending_email?: string | null;
  age: number;
  level: string;
}

export interface Session {
  id: string;
  created_at: string;
  last_used_at: string;
  expires_at: string;
  user_agent: string | null;
  ip_address: string | null;
  current: boolean;
}

export interface ActivityEvent {
  event: string;
  at: string;
  ip: string | null;
  user_agent: string | null;
  detail: Record<string, string | number | boolean>;
}

export interface Message {
  id: number;
  author: 'system' | 'user';
  text: string;
  created_at: string;
}

export interface Page<T> {
  items: T[];
  next: string | null;
}

export interface MfaStatus {
  totp: null | { status: 'pending' | 'active'; created_at: string };
  recovery_codes_left: number;
  passkeys: number;
}

export interface TotpEnrolment {
  factor_id: string | number;
  secret: string;
  otpauth_uri: string;
}

export interface Passkey {
  id: string | number;
  name: string;
  created_at: string;
  last_used_at: string | null;
  backed_up: boolean;
  suspect: boolean;
}

/** What the server hands out before a WebAuthn ceremony: the options, and the id of the challenge in them. */
export interface Ceremony<Options> {
  challenge_id: string;
  options: Options;
}
