// Logins and refreshes as the session suites need them: a grant is the pair of tokens plus the session id.
import { expect } from 'vitest';
import { postForm, postJson, type RegisteredUser, type Reply, splitToken } from './client.ts';
import type { ServerContext } from './server.ts';

/** Any running server, when a suite talks to a second instance. */
export type Base = { url(p: string): string };

export interface Grant {
  access: string;
  refresh: string;
  sid: string;
}

/** Asserts a 200 token response, tracks its tokens for the log scan, and returns them with their session id. */
export function toGrant(ctx: ServerContext, r: Reply, what: string): Grant {
  expect(r.status, `${what}: ${r.text}`).toBe(200);
  ctx.track(r.json.access_token);
  ctx.track(r.json.refresh_token);
  return {
    access: r.json.access_token,
    refresh: r.json.refresh_token,
    sid: splitToken(r.json.access_token).payload.sid,
  };
}

export async function loginGrant(
  ctx: ServerContext,
  u: RegisteredUser,
  headers: Record<string, string> = {},
  on: Base = ctx,
): Promise<Grant> {
  const r = await postForm(
    on.url('/token'),
    { grant_type: 'password', username: u.username, password: u.password },
    headers,
  );
  return toGrant(ctx, r, `login ${u.username}`);
}

export async function refreshRaw(on: Base, token: string, mode: 'form' | 'json' = 'form'): Promise<Reply> {
  const fields = { grant_type: 'refresh_token', refresh_token: token };
  return mode === 'form'
    ? await postForm(on.url('/token'), fields)
    : await postJson(on.url('/token'), fields);
}
