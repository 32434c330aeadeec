// The page's only door to the API. The access token lives in this module's memory and nowhere else; the refresh and
// device tokens live in HttpOnly cookies that the server sets for requests carrying X-Gatehouse-Client: web.

const CLIENT_HEADER = { 'X-Gatehouse-Client': 'web' };
// Not a secret: it only saves a pointless refresh request on a visit that never signed in.
const SESSION_HINT = 'gatehouse:maybe-signed-in';

let accessToken: string | undefined;
let refreshing: Promise<boolean> | undefined;
let onSessionLost: () => void = () => {};

/** An answer of the API other than success, with its own message and the fields it names. */
export class ApiError extends Error {
  readonly status: number;
  /** Field name → message, from a 422's `detail` list or a 409's code. */
  readonly fields: ReadonlyMap<string, string>;

  constructor(status: number, message: string, fields: ReadonlyMap<string, string> = new Map()) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.fields = fields;
  }
}

interface FieldProblem {
  loc?: unknown[];
  msg?: string;
}

const FIELD_OF_CODE: Record<string, string> = { username_taken: 'username', email_taken: 'email' };

async function errorOf(response: Response): Promise<ApiError> {
  let body: Record<string, unknown> = {};
  try {
    body = (await response.json()) as Record<string, unknown>;
  } catch {
    // Not JSON (a proxy's page, say): the status line is all there is to say.
  }
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
  const field = typeof body.code === 'string' ? FIELD_OF_CODE[body.code] : undefined;
  const retry = response.headers.get('retry-after');
  const message = response.status === 429 && retry ? `${text} (retry in ${retry} s)` : text;
  return new ApiError(response.status, message, field ? new Map([[field, message]]) : new Map());
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

/** Calls the API as the signed-in user; an expired access token is refreshed once from the cookie. */
export async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  let response = await send(method, path, body);
  if (response.status === 401 && accessToken) {
    if (await refresh()) response = await send(method, path, body);
    else {
      onSessionLost();
      throw new ApiError(401, 'Your session has ended. Sign in again.');
    }
  }
  if (!response.ok) throw await errorOf(response);
  if (response.status === 204) return undefined as T;
  return (await response.json()) as T;
}

interface TokenAnswer {
  access_token: string;
}

async function takeToken(response: Response): Promise<void> {
  if (!response.ok) throw await errorOf(response);
  accessToken = ((await response.json()) as TokenAnswer).access_token;
  localStorage.setItem(SESSION_HINT, '1');
}

/** The password grant in cookie mode: the refresh and device tokens arrive as HttpOnly cookies. */
export async function signIn(username: string, password: string): Promise<void> {
  accessToken = undefined;
  await takeToken(await send('POST', '/token', { grant_type: 'password', username, password }));
}

/** Exchanges the refresh cookie for a new access token (and a rotated cookie); false when there is no session. */
export function refresh(): Promise<boolean> {
  refreshing ??= (async () => {
    try {
      accessToken = undefined;
      await takeToken(await send('POST', '/token', { grant_type: 'refresh_token' }));
      return true;
    } catch (error) {
      // Refused (no cookie, or a session that ended): forget it. A network failure or a 429/503 says nothing of
      // the session, which the next reload tries again.
      if (error instanceof ApiError && error.status === 400) forget();
      return false;
    } finally {
      refreshing = undefined;
    }
  })();
  return refreshing;
}

/** A reload signs back in from the cookie, without a request when this browser never signed in. */
export async function resume(): Promise<boolean> {
  if (localStorage.getItem(SESSION_HINT) === null) return false;
  return refresh();
}

/** Drops the access token; the server clears the cookies of the requests that end a session. */
export function forget(): void {
  accessToken = undefined;
  localStorage.removeItem(SESSION_HINT);
}

export function whenSessionLost(handler: () => void): void {
  onSessionLost = handler;
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
