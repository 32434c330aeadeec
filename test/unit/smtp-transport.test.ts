import { describe, expect, it } from 'vitest';
import {
  MAX_SMTP_TIMEOUT_MS,
  smtpTransportOptions,
  withoutAddressesOrTokens,
} from '../../src/outbound/smtp.ts';
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

// Found from outside: a server's refusal quoted the recipient, or a content filter's the message and its reset link,
// and the reason was logged and stored word for word.
describe('the reason kept of a refused mail', () => {
  it.each([
    [
      '550 <jane.doe+x@example.com>: Recipient address rejected: User unknown in virtual mailbox table',
      '550 <[address]>: Recipient address rejected: User unknown in virtual mailbox table',
    ],
    [
      '554 5.7.1 spam score high for https://id.example.com/account/reset-password#token=Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4',
      '554 5.7.1 spam score high for [link to https://id.example.com]',
    ],
    [
      '550-5.1.1 https://support.google.com/mail/?p=NoSuchUser a1b2c3d4e5f6g7h8i9j0k1-prod.mx.google.com',
      '550-5.1.1 [link to https://support.google.com] a1b2c3d4e5f6g7h8i9j0k1-prod.mx.google.com',
    ],
    ['421 mta-outbound-eu-west1-prod.example.net busy', '421 mta-outbound-eu-west1-prod.example.net busy'],
    ['554 quoted token Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4 here', '554 quoted token [redacted] here'],
    ['554 part of one 5f2b9c0e1d7a4e3b8c6d', '554 part of one [redacted]'],
    // Found from outside: a sentence's full stop after a token read as a host name's dot.
    [
      '554 5.7.1 Message rejected: suspicious string kAb9TzZIFslh9G_QxwhH5FW3I58GYMpJ2kjw7Db1dVs. Contact postmaster.',
      '554 5.7.1 Message rejected: suspicious string [redacted]. Contact postmaster.',
    ],
    ['554 near 5f2b9c0e1d7a4e3b8c6d. Bye', '554 near [redacted]. Bye'],
    ['554 5.1.1 unknown "w.x"@example.org', '554 5.1.1 unknown [address]'],
    ['554 unknown Zed.R%40example.org', '554 unknown [address]'],
    ['535 see smtp://bob:secret@mail.example.com', '535 see [link to smtp://…]'],
    [
      '451 Internationalisation-unsupported-here, try later',
      '451 Internationalisation-unsupported-here, try later',
    ],
  ])('keeps the words of %j', (reply, kept) => {
    expect(withoutAddressesOrTokens(reply)).toBe(kept);
  });

  it('cuts a reply to 2,000 characters before reading it', () => {
    expect(withoutAddressesOrTokens(`550 ${'a'.repeat(40_000)}://x`)).toBe(`550 ${'a'.repeat(1996)}`);
  });
});
