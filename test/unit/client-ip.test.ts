import { describe, expect, it } from 'vitest';
import { clientIpKey, UNKNOWN_CLIENT } from '../../src/security/client-ip.ts';

describe('clientIpKey', () => {
  it('keeps an IPv4 address as it is', () => {
    expect(clientIpKey('203.0.113.7', 64)).toBe('203.0.113.7');
  });

  it('collapses an IPv4-mapped IPv6 address to its IPv4 address, in either spelling', () => {
    expect(clientIpKey('::ffff:203.0.113.7', 64)).toBe('203.0.113.7');
    expect(clientIpKey('::ffff:cb00:7107', 64)).toBe('203.0.113.7');
    expect(clientIpKey('::FFFF:203.0.113.7', 64)).toBe('203.0.113.7');
  });

  it('puts every address of one /64 in one bucket and the next /64 in another', () => {
    const a = clientIpKey('2001:db8:1:2:aaaa:bbbb:cccc:dddd', 64);
    expect(a).toBe('2001:db8:1:2::/64');
    expect(clientIpKey('2001:0db8:0001:0002::1', 64)).toBe(a);
    expect(clientIpKey('2001:db8:1:2::1%eth0', 64)).toBe(a);
    expect(clientIpKey('2001:db8:1:3::1', 64)).not.toBe(a);
  });

  it('masks to the configured prefix length, also inside a group', () => {
    expect(clientIpKey('2001:db8:1:2::1', 48)).toBe('2001:db8:1::/48');
    expect(clientIpKey('2001:db8:1:2::1', 56)).toBe('2001:db8:1::/56');
    expect(clientIpKey('2001:db8:1:2ff::1', 56)).toBe('2001:db8:1:200::/56');
    expect(clientIpKey('2001:db8:1:2::1', 128)).toBe('2001:db8:1:2::1/128');
  });

  it('writes the prefix in RFC 5952 form: the longest run of zero groups as ::', () => {
    expect(clientIpKey('::1', 128)).toBe('::1/128');
    expect(clientIpKey('2001:0:0:1:0:0:0:1', 128)).toBe('2001:0:0:1::1/128');
    expect(clientIpKey('fe80::1', 64)).toBe('fe80::/64');
  });

  it('counts a missing or unreadable address in one shared bucket instead of not at all', () => {
    expect(clientIpKey(undefined, 64)).toBe(UNKNOWN_CLIENT);
    expect(clientIpKey('', 64)).toBe(UNKNOWN_CLIENT);
    expect(clientIpKey('not an address', 64)).toBe(UNKNOWN_CLIENT);
  });
});
