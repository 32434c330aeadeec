import { describe, expect, it } from 'vitest';
import {
  type ClientIpResolver,
  canonicalIp,
  clientIpKey,
  createClientIpResolver,
  parseTrustedProxies,
  UNKNOWN_CLIENT,
} from '../../src/security/client-ip.ts';

const parse = (value: string | undefined) => {
  const problems: string[] = [];
  const trusted = parseTrustedProxies(value, problems);
  return { trusted, problems };
};

describe('parseTrustedProxies (TRUST_PROXY)', () => {
  it('trusts nothing when unset, empty, false or 0', () => {
    for (const value of [undefined, '', 'false', 'FALSE', 'False', '0']) {
      expect(parse(value), String(value)).toEqual({ trusted: [], problems: [] });
    }
  });

  it('takes single IPv4 and IPv6 addresses as one-address ranges, in canonical form', () => {
    expect(parse('127.0.0.1').trusted).toEqual(['127.0.0.1/32']);
    expect(parse('::1').trusted).toEqual(['::1/128']);
    expect(parse('2001:DB8:0:0::1').trusted).toEqual(['2001:db8::1/128']);
    expect(parse('0:0:0:0:0:0:0:1').trusted).toEqual(['::1/128']);
  });

  it('takes IPv4 and IPv6 CIDRs with every prefix from /8 (IPv4) or /7 (IPv6) to the address width', () => {
    expect(parse('10.0.0.0/8,192.168.1.0/24,203.0.113.7/32,128.0.0.0/9').trusted).toEqual([
      '10.0.0.0/8',
      '192.168.1.0/24',
      '203.0.113.7/32',
      '128.0.0.0/9',
    ]);
    expect(parse('2001:db8::/32,fd00::/8,2001:DB8::1/128,fc00::/7').trusted).toEqual([
      '2001:db8::/32',
      'fd00::/8',
      '2001:db8::1/128',
      'fc00::/7',
    ]);
  });

  it('reads IPv4-mapped IPv6 entries as the IPv4 they map', () => {
    expect(parse('::ffff:10.0.0.1').trusted).toEqual(['10.0.0.1/32']);
    expect(parse('::ffff:10.0.0.0/104').trusted).toEqual(['10.0.0.0/8']);
  });

  it('expands the names loopback, linklocal and uniquelocal, in any letter case', () => {
    expect(parse('loopback').trusted).toEqual(['127.0.0.0/8', '::1/128']);
    expect(parse('linklocal').trusted).toEqual(['169.254.0.0/16', 'fe80::/10']);
    expect(parse('uniquelocal').trusted).toEqual([
      '10.0.0.0/8',
      '172.16.0.0/12',
      '192.168.0.0/16',
      'fc00::/7',
    ]);
    expect(parse('LoopBack').trusted).toEqual(['127.0.0.0/8', '::1/128']);
  });

  it('mixes names, addresses and ranges, ignoring whitespace around each entry', () => {
    expect(parse(' loopback ,\t10.0.0.0/8 , 2001:db8::5 ')).toEqual({
      trusted: ['127.0.0.0/8', '::1/128', '10.0.0.0/8', '2001:db8::5/128'],
      problems: [],
    });
  });

  it.each(['true', 'TRUE', 'True', 'yes', 'on'])(
    'refuses %s, which would trust the client-written left-most X-Forwarded-For, and says what to write instead',
    (value) => {
      const { problems } = parse(value);
      expect(problems).toHaveLength(1);
      expect(problems[0]).toMatch(/^TRUST_PROXY=/);
      expect(problems[0]).toMatch(/left-most/);
      expect(problems[0]).toMatch(/TRUST_PROXY=loopback/);
    },
  );

  it.each(['1', '2', '10', '01'])('refuses the hop count %s and says what to write instead', (value) => {
    const { problems } = parse(value);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^TRUST_PROXY=/);
    expect(problems[0]).toMatch(/hop count/);
    expect(problems[0]).toMatch(/TRUST_PROXY=loopback/);
  });

  it.each(['127.0.0.1,,10.0.0.1', '127.0.0.1,', ',127.0.0.1', ',', ' , '])(
    'refuses the empty entry in %j',
    (value) => {
      const { problems } = parse(value);
      expect(problems).toHaveLength(1);
      expect(problems[0]).toMatch(/TRUST_PROXY.*empty entry/);
    },
  );

  it.each(['10.0.0.0/0', '0.0.0.0/0', '::/0'])('refuses %s, which trusts every address', (value) => {
    const { problems } = parse(value);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/TRUST_PROXY.*every address/);
  });

  // Split in halves, every address is trusted as by 0.0.0.0/0: no proxy network is wider than a /8 (IPv4) or than
  // fc00::/7, the widest of the named ranges (IPv6).
  it.each([
    ['0.0.0.0/1,128.0.0.0/1', 2],
    ['64.0.0.0/2', 1],
    ['10.0.0.0/7', 1],
    ['::/1,8000::/1', 2],
    ['2000::/3', 1],
    ['fc00::/6', 1],
    ['::ffff:0.0.0.0/97', 1],
  ])('refuses %s, wider than any network of proxies', (value, refused) => {
    const { problems } = parse(value);
    expect(problems).toHaveLength(refused);
    expect(problems[0]).toMatch(/TRUST_PROXY.*wider than/);
  });

  // Node's BlockList matches an IPv4 peer against the IPv4-mapped range ::ffff:0:0/96: an IPv6 range holding it
  // trusts every IPv4 client.
  it.each(['::/64', '::/80', '::/7', 'fe::/7', '::fffe:0:0/79'])(
    'refuses %s, which holds every IPv4-mapped address',
    (value) => {
      const { problems } = parse(value);
      expect(problems).toHaveLength(1);
      expect(problems[0]).toMatch(/TRUST_PROXY.*IPv4-mapped/);
    },
  );

  it.each(['::ffff:0:0/96', '0:0:0:0:0:ffff::/96'])('refuses %s, the mapped range itself', (value) => {
    expect(parse(value).problems).toHaveLength(1);
  });

  it('still takes a mapped range written as the IPv4 range it maps, and IPv6 ranges beside the mapped ones', () => {
    expect(parse('::ffff:10.0.0.0/104,::1,fd00::/8,64:ff9b::/96,::/96,::/81').trusted).toEqual([
      '10.0.0.0/8',
      '::1/128',
      'fd00::/8',
      '64:ff9b::/96',
      '::/96',
      '::/81',
    ]);
  });

  it.each([
    ['10.0.0.0/8', ['10.0.0.0/8']],
    ['fc00::/7', ['fc00::/7']],
    ['uniquelocal', ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7']],
  ])('accepts %s, as wide as a network of proxies gets', (value, ranges) => {
    const { problems, trusted } = parse(value);
    expect(problems).toEqual([]);
    expect(trusted).toEqual(ranges);
  });

  it.each(['10.0.0.0/33', '2001:db8::/129', '::/200'])(
    'refuses the prefix beyond the address width in %s',
    (value) => {
      const { problems } = parse(value);
      expect(problems).toHaveLength(1);
      expect(problems[0]).toMatch(/TRUST_PROXY.*prefix/);
    },
  );

  it.each([
    'localhost',
    'all',
    '*',
    'false,127.0.0.1',
    '256.0.0.1',
    '10.0.0',
    '010.0.0.1',
    '1.2.3.4:80',
    '[::1]',
    'fe80::1%eth0',
    '10.0.0.0/',
    '10.0.0.0/8/8',
    '10.0.0.0/ 8',
    '10.0.0.0/-1',
    '10.0.0.0/+8',
    '10.0.0.0/08',
    '10.0.0.0/8.0',
    '10.0.0.0/255.0.0.0',
    '/8',
    '2001:db8::/x',
    '2001:db8:::1',
  ])('refuses the unparseable entry %j, naming TRUST_PROXY and the accepted forms', (value) => {
    const { problems } = parse(value);
    expect(problems.length).toBeGreaterThanOrEqual(1);
    expect(problems.join('\n')).toMatch(/TRUST_PROXY/);
    expect(problems.join('\n')).toMatch(/loopback, linklocal, uniquelocal/);
  });

  it('reports every bad entry at once', () => {
    const { problems } = parse('localhost, 10.0.0.0/8, 10.0.0.0/33, nonsense');
    expect(problems).toHaveLength(3);
    expect(problems.join('\n')).toMatch(/localhost/);
    expect(problems.join('\n')).toMatch(/10\.0\.0\.0\/33/);
    expect(problems.join('\n')).toMatch(/nonsense/);
  });

  it('quotes at most the start of a very long entry', () => {
    const { problems } = parse('x'.repeat(5000));
    expect(problems).toHaveLength(1);
    expect(problems[0]?.length).toBeLessThan(400);
  });
});

describe('canonicalIp', () => {
  it('writes an address one way only', () => {
    expect(canonicalIp('203.0.113.7')).toBe('203.0.113.7');
    expect(canonicalIp('2001:DB8:0:0:0:0:0:1')).toBe('2001:db8::1');
    expect(canonicalIp('::ffff:203.0.113.7')).toBe('203.0.113.7');
    expect(canonicalIp('::FFFF:cb00:7107')).toBe('203.0.113.7');
    expect(canonicalIp('fe80::1%eth0')).toBe('fe80::1');
  });

  it('answers undefined for anything that is not one IP address', () => {
    for (const text of [
      '',
      ' 1.2.3.4',
      '1.2.3.4 ',
      '1.2.3',
      '01.2.3.4',
      'a.b.c.d',
      '1.2.3.4, 5.6.7.8',
      'x'.repeat(10000),
    ]) {
      expect(canonicalIp(text), text).toBeUndefined();
    }
  });
});

describe('createClientIpResolver', () => {
  const resolver = (value: string, header?: string) => {
    const problems: string[] = [];
    const trusted = parseTrustedProxies(value, problems);
    expect(problems).toEqual([]);
    return createClientIpResolver({ trustedProxies: trusted, clientIpHeader: header });
  };
  const xff = (value: string) => ({ 'x-forwarded-for': value });
  /** Checks the client answered for each X-Forwarded-For value sent by the given peer. */
  const expectClients = (r: ClientIpResolver, peer: string, clientByForwarded: Record<string, string>) => {
    for (const [forwarded, client] of Object.entries(clientByForwarded)) {
      expect(r.resolve(peer, xff(forwarded)), forwarded).toBe(client);
    }
  };

  it('answers the socket address whatever X-Forwarded-For says when nothing is trusted', () => {
    const none = createClientIpResolver({ trustedProxies: [], clientIpHeader: undefined });
    for (const forged of ['203.0.113.1', '203.0.113.2', 'spoofed, 198.51.100.3']) {
      expect(none.resolve('127.0.0.1', xff(forged))).toBe('127.0.0.1');
    }
  });

  it('ignores X-Forwarded-For from a peer outside the trusted ranges', () => {
    expect(resolver('10.0.0.0/8').resolve('192.0.2.50', xff('203.0.113.7'))).toBe('192.0.2.50');
  });

  it('answers the socket address of a trusted peer that sent no X-Forwarded-For', () => {
    expect(resolver('loopback').resolve('127.0.0.1', {})).toBe('127.0.0.1');
  });

  it('takes the right-most untrusted address, so a spoofed left-most entry is ignored', () => {
    expect(resolver('loopback').resolve('127.0.0.1', xff('spoofed, 203.0.113.7'))).toBe('203.0.113.7');
    expect(resolver('loopback').resolve('127.0.0.1', xff('198.51.100.1, 203.0.113.7'))).toBe('203.0.113.7');
  });

  // Found from outside: a local process sent 2,500 loopback entries, each read (20-29 ms of the event loop). No real
  // chain has 32 proxies: past them, the request is answered as the chain's own.
  it('walks at most 32 trusted hops: past them the nearest trusted one is the client', () => {
    const chain = (count: number) =>
      Array.from({ length: count }, (_, index) => `10.0.${index >> 8}.${index & 255}`);
    const r = resolver('10.0.0.0/8');
    expect(r.resolve('10.255.0.1', xff(['203.0.113.9', ...chain(32)].join(', ')))).toBe('203.0.113.9');
    expect(r.resolve('10.255.0.1', xff(['203.0.113.9', ...chain(33)].join(', ')))).toBe('10.0.0.1');
    expect(r.resolve('10.255.0.1', xff(['203.0.113.9', ...chain(2500)].join(', ')))).toBe('10.0.9.164');
  });

  it('gives two real clients behind one trusted proxy two addresses', () => {
    expectClients(resolver('loopback'), '127.0.0.1', {
      '203.0.113.7': '203.0.113.7',
      '203.0.113.8': '203.0.113.8',
    });
  });

  it('walks through a chain of trusted proxies to the client', () => {
    expectClients(resolver('127.0.0.1,10.0.0.0/8'), '127.0.0.1', {
      '198.51.100.9, 10.1.2.3': '198.51.100.9',
      'spoofed, 198.51.100.9, 10.1.2.3, 10.9.9.9': '198.51.100.9',
    });
  });

  it('answers the left-most address when every hop is trusted', () => {
    expect(resolver('uniquelocal').resolve('10.0.0.1', xff('10.0.0.3, 10.0.0.2'))).toBe('10.0.0.3');
  });

  it('stops at the hop that wrote an entry that is not an address, never answering the junk', () => {
    expectClients(resolver('127.0.0.1,10.0.0.0/8'), '127.0.0.1', {
      garbage: '127.0.0.1',
      '198.51.100.9, garbage, 10.1.2.3': '10.1.2.3',
      '198.51.100.9,,10.1.2.3': '10.1.2.3',
      ['9'.repeat(9000)]: '127.0.0.1',
    });
  });

  it('reads entries with a port or IPv6 brackets, and answers canonical addresses', () => {
    expectClients(resolver('loopback'), '127.0.0.1', {
      '203.0.113.7:4711': '203.0.113.7',
      '[2001:DB8::1]:443': '2001:db8::1',
      '[2001:db8::1]': '2001:db8::1',
      '2001:db8:0:0::1': '2001:db8::1',
      '::ffff:203.0.113.7': '203.0.113.7',
    });
  });

  it('trusts an IPv4-mapped or IPv6 loopback peer under the name loopback', () => {
    const r = resolver('loopback');
    expect(r.resolve('::ffff:127.0.0.1', xff('203.0.113.7'))).toBe('203.0.113.7');
    expect(r.resolve('::1', xff('2001:db8::7'))).toBe('2001:db8::7');
    expect(r.isTrusted('::ffff:127.0.0.1')).toBe(true);
    expect(r.isTrusted('::2')).toBe(false);
    expect(r.isTrusted('not an address')).toBe(false);
    expect(r.isTrusted(undefined)).toBe(false);
  });

  it('honours the client IP header from a trusted peer, before X-Forwarded-For', () => {
    const r = resolver('loopback', 'x-real-ip');
    expect(r.resolve('127.0.0.1', { 'x-real-ip': '203.0.113.7', ...xff('198.51.100.1') })).toBe(
      '203.0.113.7',
    );
    expect(r.resolve('127.0.0.1', { 'x-real-ip': '2001:DB8::7' })).toBe('2001:db8::7');
    expect(r.resolve('127.0.0.1', { 'x-real-ip': ' 203.0.113.7 ' })).toBe('203.0.113.7');
  });

  it('ignores the client IP header from an untrusted peer', () => {
    const r = resolver('10.0.0.0/8', 'cf-connecting-ip');
    expect(r.resolve('192.0.2.50', { 'cf-connecting-ip': '203.0.113.7', ...xff('203.0.113.8') })).toBe(
      '192.0.2.50',
    );
  });

  it('falls back to X-Forwarded-For when the client IP header is not one address', () => {
    const r = resolver('loopback', 'x-real-ip');
    for (const bad of ['', 'garbage', '203.0.113.7, 198.51.100.1', '203.0.113.7:80', 'x'.repeat(9000)]) {
      expect(r.resolve('127.0.0.1', { 'x-real-ip': bad, ...xff('198.51.100.2') }), bad).toBe('198.51.100.2');
    }
    expect(r.resolve('127.0.0.1', { 'x-real-ip': ['203.0.113.7', '203.0.113.8'] })).toBe('127.0.0.1');
    expect(r.resolve('127.0.0.1', { 'x-real-ip': 'garbage' })).toBe('127.0.0.1');
  });

  it('answers undefined when the socket has no address (the connection is gone)', () => {
    expect(resolver('loopback').resolve(undefined, xff('203.0.113.7'))).toBeUndefined();
  });
});

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
