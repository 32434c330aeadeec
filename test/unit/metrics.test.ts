import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { countSecurityEvents } from '../../src/http/metrics.ts';
import { parseSamples, total } from '../support/prometheus.ts';

const ORIGIN = { requestId: 'r', userAgent: undefined, ipAddress: '192.0.2.1' };

async function countAfter(events: [string, Record<string, unknown>][]) {
  const registry = new Registry();
  const sink = countSecurityEvents(registry);
  for (const [event, fields] of events) sink(event, fields, ORIGIN);
  return parseSamples(await registry.metrics());
}

describe('counting security events', () => {
  it('labels a failed login with its reason, and one without a reason as unspecified', async () => {
    const reasons = ['wrong_password', 'unknown_user', 'account_disabled', 'account_disabled', undefined];
    const samples = await countAfter(
      reasons.map((reason) => ['login_failed', { username: 'alice', ...(reason ? { reason } : {}) }]),
    );
    const failed = (reason: string) =>
      total(samples, 'gatehouse_logins_total', { outcome: 'failed', reason });
    expect([
      failed('wrong_password'),
      failed('unknown_user'),
      failed('account_disabled'),
      failed('unspecified'),
    ]).toEqual([1, 1, 2, 1]);
    expect(total(samples, 'gatehouse_security_events_total', { event: 'login_failed' })).toBe(5);
  });

  it('counts a throttled login once, as throttled, though it is also audited as failed (locked)', async () => {
    const samples = await countAfter([
      ['login_throttled', { rule: 'R5', username: 'alice' }],
      ['login_failed', { username: 'alice', reason: 'locked' }],
    ]);
    expect(total(samples, 'gatehouse_logins_total', {})).toBe(1);
    expect(total(samples, 'gatehouse_logins_total', { outcome: 'throttled', reason: 'R5' })).toBe(1);
    expect(total(samples, 'gatehouse_security_events_total', { event: 'login_failed' })).toBe(1);
  });

  it('counts throttled logins and throttled requests by rule', async () => {
    const samples = await countAfter([
      ['login_throttled', { rule: 'R1', username: 'alice' }],
      ['login_throttled', { rule: 'R4' }],
      ['request_throttled', { rule: 'R5' }],
      ['request_throttled', { rule: 'R5' }],
      ['request_throttled', {}],
    ]);
    expect(total(samples, 'gatehouse_logins_total', { outcome: 'throttled' })).toBe(2);
    expect(total(samples, 'gatehouse_throttled_total', { kind: 'login', rule: 'R1' })).toBe(1);
    expect(total(samples, 'gatehouse_throttled_total', { kind: 'login', rule: 'R4' })).toBe(1);
    expect(total(samples, 'gatehouse_throttled_total', { kind: 'request', rule: 'R5' })).toBe(2);
    expect(total(samples, 'gatehouse_throttled_total', { kind: 'request', rule: 'unspecified' })).toBe(1);
  });

  // Found from outside: a session's password checks refused by R1 or R4 were in no throttling count.
  it('counts the refused password checks of a session as throttled, kind password_check, by rule', async () => {
    const samples = await countAfter([
      ['password_check_throttled', { rule: 'R1', userId: 1, retryAfterSeconds: 30 }],
      ['password_check_throttled', { rule: 'R4', userId: 1, retryAfterSeconds: 60 }],
    ]);
    expect(total(samples, 'gatehouse_throttled_total', { kind: 'password_check', rule: 'R1' })).toBe(1);
    expect(total(samples, 'gatehouse_throttled_total', { kind: 'password_check', rule: 'R4' })).toBe(1);
    expect(total(samples, 'gatehouse_logins_total', {})).toBe(0);
  });

  it('reads no label value from a field that is not a short identifier', async () => {
    const samples = await countAfter([
      ['login_failed', { reason: 'a password someone typed into the wrong field' }],
      ['login_failed', { reason: { nested: true } }],
      ['request_throttled', { rule: 'x'.repeat(49) }],
      ['login_failed', { reason: 'wrong_password' }],
    ]);
    const reasons = samples
      .filter((sample) => sample.name === 'gatehouse_logins_total' && sample.labels.outcome === 'failed')
      .map((sample) => [sample.labels.reason, sample.value]);
    expect(reasons).toEqual([
      ['other', 2],
      ['wrong_password', 1],
    ]);
    expect(total(samples, 'gatehouse_throttled_total', { rule: 'other' })).toBe(1);
  });

  it('starts the known events at zero, so that a first increment shows as a rate', async () => {
    const samples = await countAfter([]);
    for (const event of [
      'user_registered',
      'login_succeeded',
      'login_failed',
      'refresh_token_reuse_detected',
    ]) {
      expect(
        samples.filter((s) => s.name === 'gatehouse_security_events_total' && s.labels.event === event),
      ).toEqual([{ name: 'gatehouse_security_events_total', labels: { event }, value: 0 }]);
    }
  });
});
