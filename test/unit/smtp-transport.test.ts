import { describe, expect, it } from 'vitest';
import { MAX_SMTP_TIMEOUT_MS, smtpTransportOptions } from '../../src/outbound/smtp.ts';
import { MAIL_LEASE_MS } from '../../src/services/mail-sender.ts';

describe('SMTP transport options', () => {
  it('sets 10 s connection, greeting and socket timeouts by default', () => {
    expect(smtpTransportOptions('smtp://mail.example.com:587')).toEqual({
      url: 'smtp://mail.example.com:587',
      connectionTimeout: 10_000,
      greetingTimeout: 10_000,
      socketTimeout: 10_000,
      dnsTimeout: 10_000,
    });
  });

  it("takes shorter timeouts from the URL's query and clamps longer ones, so that a send never outlives its lease", () => {
    const options = smtpTransportOptions(
      'smtps://user:pw@mail.example.com/?socketTimeout=600000&connectionTimeout=2000&requireTLS=true',
    );
    expect(options).toEqual({
      url: 'smtps://user:pw@mail.example.com/?requireTLS=true',
      connectionTimeout: 2000,
      greetingTimeout: 10_000,
      socketTimeout: MAX_SMTP_TIMEOUT_MS,
      dnsTimeout: 10_000,
    });
    expect(MAX_SMTP_TIMEOUT_MS).toBeLessThanOrEqual(30_000);
    // Each phase at its longest ends well within a lease, which a sender renews while it sends.
    expect(2 * MAX_SMTP_TIMEOUT_MS).toBeLessThan(MAIL_LEASE_MS);
  });

  // nodemailer counts the greeting within the connection's time: a longer greeting asked alone was cut to the
  // connection's 10 s (found from outside: 25000 and 90000 both gave up after 10 s).
  it('lets a greeting timeout asked alone lengthen the connection timeout, which counts the greeting in it', () => {
    for (const [asked, effective] of [
      [25_000, 25_000],
      [90_000, MAX_SMTP_TIMEOUT_MS],
      [3000, 3000],
    ] as const) {
      const options = smtpTransportOptions(`smtp://mail.example.com/?greetingTimeout=${asked}`);
      expect(options.greetingTimeout).toBe(effective);
      expect(options.connectionTimeout).toBe(Math.max(10_000, effective));
    }
    // Asked both, both stand.
    const both = smtpTransportOptions(
      'smtp://mail.example.com/?greetingTimeout=20000&connectionTimeout=5000',
    );
    expect(both).toMatchObject({ greetingTimeout: 20_000, connectionTimeout: 5000 });
  });

  it('ignores a timeout in the query that is not a positive number', () => {
    expect(smtpTransportOptions('smtp://mail.example.com/?greetingTimeout=soon').greetingTimeout).toBe(
      10_000,
    );
  });
});
