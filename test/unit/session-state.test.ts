import { describe, expect, it } from 'vitest';
import type { Session } from '../../src/domain/session.ts';
import { isClaimedSessionLive, sessionState } from '../../src/services/session-state.ts';

const policy = { idleTtlSeconds: 600 };
const login = new Date('2026-12-01T10:00:00.000Z');
const at = (seconds: number) => new Date(login.getTime() + seconds * 1000);

function session(overrides: Partial<Session> = {}): Session {
  return {
    id: 's1',
    userId: 7,
    createdAt: login,
    lastUsedAt: login,
    expiresAt: at(3600),
    revokedAt: undefined,
    userAgent: undefined,
    ipAddress: undefined,
    scope: 'conversation:read conversation:write',
    amr: 'pwd',
    ...overrides,
  };
}

describe('session rule', () => {
  it('is live right after login', () => {
    expect(sessionState(session(), login, policy)).toBe('live');
  });

  it('is live one millisecond before the idle cut-off and idle exactly at it', () => {
    expect(sessionState(session(), new Date(at(600).getTime() - 1), policy)).toBe('live');
    expect(sessionState(session(), at(600), policy)).toBe('idle');
  });

  it('counts the idle window from the last use, not from the login', () => {
    expect(sessionState(session({ lastUsedAt: at(500) }), at(1000), policy)).toBe('live');
    expect(sessionState(session({ lastUsedAt: at(500) }), at(1100), policy)).toBe('idle');
  });

  it('is live one millisecond before its absolute expiry and expired exactly at it', () => {
    const used = session({ lastUsedAt: at(3500) });
    expect(sessionState(used, new Date(at(3600).getTime() - 1), policy)).toBe('live');
    expect(sessionState(used, at(3600), policy)).toBe('expired');
  });

  it('is expired, not idle, when both limits have passed', () => {
    expect(sessionState(session(), at(7200), policy)).toBe('expired');
  });

  it('is revoked from the moment it was revoked, whatever the clocks say', () => {
    expect(sessionState(session({ revokedAt: login }), login, policy)).toBe('revoked');
    expect(sessionState(session({ revokedAt: at(10) }), at(7200), policy)).toBe('revoked');
  });

  it('accepts a claimed session only when it exists, is live and belongs to the claimed user', () => {
    const claim = { sessionId: 's1', userId: 7 };
    expect(isClaimedSessionLive(claim, session(), login, policy)).toBe(true);
    expect(isClaimedSessionLive(claim, undefined, login, policy)).toBe(false);
    expect(isClaimedSessionLive({ sessionId: 's1', userId: 8 }, session(), login, policy)).toBe(false);
    expect(isClaimedSessionLive({ sessionId: 's2', userId: 7 }, session(), login, policy)).toBe(false);
    expect(isClaimedSessionLive(claim, session({ revokedAt: login }), login, policy)).toBe(false);
    expect(isClaimedSessionLive(claim, session(), at(600), policy)).toBe(false);
  });
});
