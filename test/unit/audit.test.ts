import { describe, expect, it } from 'vitest';
import {
  auditDetailOf,
  decodeActivityCursor,
  encodeActivityCursor,
  MAX_DETAIL_TEXT_LENGTH,
} from '../../src/services/audit.ts';

describe('audit detail', () => {
  it('keeps only allow-listed fields of the allowed type', () => {
    const allowed = {
      sessionId: 'c2Vzc2lvbi1pZA',
      rule: 'per_account',
      reason: 'wrong_password',
      retryAfterSeconds: 30,
      ended: 2,
      spentForMs: 12_000,
      username: 'alice',
    };
    const others = { userId: 7, email: 'alice@example.com', nested: { sessionId: 'x' }, ended_at: 5 };
    expect(auditDetailOf({ ...allowed, ...others }, { attributed: true })).toEqual(allowed);
  });

  it('drops an allow-listed field whose value has the wrong type', () => {
    expect(
      auditDetailOf(
        { reason: 42, retryAfterSeconds: '30', ended: Number.NaN, spentForMs: Infinity, sessionId: null },
        { attributed: true },
      ),
    ).toEqual({});
  });

  it('never keeps a password, token or secret, whatever a caller passes', () => {
    const detail = auditDetailOf(
      {
        password: 'correct horse battery staple',
        new_password: 'x',
        current_password: 'x',
        access_token: 'eyJ...',
        refresh_token: 'id.secret',
        token: 't',
        deviceToken: 'd',
        secret: 's',
        mfaToken: 'm',
      },
      { attributed: true },
    );
    expect(detail).toEqual({});
  });

  it('keeps the username only when the event names an account: a name matching none may be a mistyped password', () => {
    expect(
      auditDetailOf({ username: 'hunter2hunter2', reason: 'unknown_user' }, { attributed: false }),
    ).toEqual({
      reason: 'unknown_user',
    });
    expect(auditDetailOf({ username: 'alice' }, { attributed: true })).toEqual({ username: 'alice' });
  });

  it('strips control characters and caps every text, so a detail stays well under 1 KiB', () => {
    const long = `a\u0000b\u001b[31m${'x'.repeat(10_000)}`;
    const detail = auditDetailOf(
      { username: long, sessionId: long, rule: long, reason: long, retryAfterSeconds: 1e300, ended: 1e300 },
      { attributed: true },
    );
    expect(detail.username).toMatch(/^ab\[31mx+$/);
    expect(String(detail.username)).toHaveLength(MAX_DETAIL_TEXT_LENGTH);
    expect(JSON.stringify(detail).length).toBeLessThan(1024);
    const emoji = auditDetailOf({ reason: '🔑'.repeat(100) }, { attributed: false });
    expect(emoji.reason).toBe('🔑'.repeat(MAX_DETAIL_TEXT_LENGTH));
  });
});

describe('activity cursor', () => {
  it('round-trips an event id through an opaque string', () => {
    for (const id of [1, 42, 9_007_199_254_740_991]) {
      const cursor = encodeActivityCursor(id);
      expect(cursor).toMatch(/^[A-Za-z0-9_-]+$/);
      expect(cursor).not.toContain(String(id));
      expect(decodeActivityCursor(cursor)).toBe(id);
    }
  });

  it('refuses malformed cursors rather than guessing', () => {
    const padded = `${encodeActivityCursor(42)}=`;
    const nonCanonical = encodeActivityCursor(42).replace(/.$/, (last) =>
      String.fromCharCode(last.charCodeAt(0) + 1),
    );
    for (const cursor of [
      '',
      'not a cursor',
      padded,
      nonCanonical,
      Buffer.from('0').toString('base64url'),
      Buffer.from('007').toString('base64url'),
      Buffer.from('-1').toString('base64url'),
      Buffer.from('1.5').toString('base64url'),
      Buffer.from('99999999999999999').toString('base64url'),
      'x'.repeat(5000),
    ]) {
      expect(decodeActivityCursor(cursor), cursor).toBeUndefined();
    }
  });
});
