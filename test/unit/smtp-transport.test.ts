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
    // Every phase at its longest still ends within the lease.
    expect(4 * MAX_SMTP_TIMEOUT_MS).toBeLessThan(MAIL_LEASE_MS);
  });

  it('ignores a timeout in the query that is not a positive number', () => {
    expect(smtpTransportOptions('smtp://mail.example.com/?greetingTimeout=soon').greetingTimeout).toBe(
      10_000,
    );
  });
});
