// Assertions the session suites share: is an access token live or refused, is a refresh token dead.
import { expect } from 'vitest';
import { expectInvalidToken, getWithToken, type Reply } from './client.ts';
import { type Base, refreshRaw } from './grants.ts';

/** The access token is live and belongs to `username`: GET /conversation answers 200 for them. */
export async function expectConversationOk(
  on: Base,
  access: string,
  username: string,
  what: string,
): Promise<void> {
  const r = await getWithToken(on.url('/conversation'), access);
  expect(r.status, `${what}: ${r.text}`).toBe(200);
  expect(r.json.current_user, what).toBe(username);
}

/** The access token is refused, 401 invalid_token, by GET /conversation, /users/me and /users/me/sessions. */
export async function expectAccessRefused(on: Base, access: string, what: string): Promise<void> {
  for (const path of ['/conversation', '/users/me', '/users/me/sessions']) {
    expectInvalidToken(await getWithToken(on.url(path), access), `${what} (${path})`);
  }
}

/** A token request was refused with 400 invalid_grant. */
export function expectInvalidGrant(r: Reply, what: string): void {
  expect(r.status, `${what}: ${r.text}`).toBe(400);
  expect(r.json?.error, what).toBe('invalid_grant');
}

/** The refresh token no longer refreshes: the refresh grant answers 400 invalid_grant. */
export async function expectRefreshDead(on: Base, refresh: string, what: string): Promise<void> {
  expectInvalidGrant(await refreshRaw(on, refresh), what);
}
