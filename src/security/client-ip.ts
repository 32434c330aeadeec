import { BlockList, isIP, isIPv4, isIPv6, SocketAddress } from 'node:net';

// proxy-addr's names, so that TRUST_PROXY reads as Express and Fastify users know it.
const NAMED_RANGES: Record<string, readonly string[]> = {
  loopback: ['127.0.0.0/8', '::1/128'],
  linklocal: ['169.254.0.0/16', 'fe80::/10'],
  uniquelocal: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', 'fc00::/7'],
};

const INSTEAD =
  'list the addresses of your proxies instead: TRUST_PROXY=loopback for a proxy on this machine, or their ' +
  'addresses and ranges, e.g. TRUST_PROXY=10.0.0.5,192.168.0.0/16';
const ACCEPTED = `an IP address, a CIDR range (10.0.0.0/8, fd00::/8) or one of ${Object.keys(NAMED_RANGES).join(', ')}`;

const PREFIX = /^(0|[1-9][0-9]{0,2})$/;
// 0.0.0.0/1 and 128.0.0.0/1 trust every address as 0.0.0.0/0 does. A private network is a /8 at the widest, and IPv6's
// widest named range, uniquelocal, a /7; a cloud's published proxy ranges are far narrower.
const WIDEST_IPV4_PREFIX = 8;
const WIDEST_IPV6_PREFIX = 7;
const IPV4_MAPPED = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/;

/** The one spelling of an IP address (IPv4-mapped IPv6 as IPv4, IPv6 compressed lower-case, no zone), or undefined. */
export function canonicalIp(text: string): string | undefined {
  const family = isIP(text);
  if (family === 4) return text;
  if (family !== 6) return undefined;
  const { address } = new SocketAddress({ address: text, family: 'ipv6' });
  return IPV4_MAPPED.exec(address)?.[1] ?? address;
}

/**
 * Parses TRUST_PROXY into canonical CIDRs (`127.0.0.0/8`, `::1/128`), empty when nothing is trusted; pushes one
 * problem per refused entry. `true` and hop counts are refused: with them the client writes its own address.
 */
export function parseTrustedProxies(value: string | undefined, problems: string[]): string[] {
  if (value === undefined || value === '' || /^(false|0)$/i.test(value)) return [];
  if (/^(true|yes|on)$/i.test(value)) {
    problems.push(
      `TRUST_PROXY=${value} is refused: it trusts every peer, so the client address would be the left-most ` +
        `X-Forwarded-For entry, which any client writes itself; ${INSTEAD}`,
    );
    return [];
  }
  if (/^[0-9]+$/.test(value)) {
    const reading = value === '1' ? 'as true (as it was read before) or as a hop count' : 'as a hop count';
    problems.push(
      `TRUST_PROXY=${value} is refused: read ${reading}, it cannot tell your proxy from a client that sends ` +
        `X-Forwarded-For itself; ${INSTEAD}`,
    );
    return [];
  }
  const ranges: string[] = [];
  const entries = value.split(',').map((entry) => entry.trim());
  if (entries.some((entry) => entry === '')) {
    problems.push('TRUST_PROXY has an empty entry (two commas in a row, or one at either end)');
  }
  for (const entry of entries.filter((entry) => entry !== '')) {
    const named = NAMED_RANGES[entry.toLowerCase()];
    if (named) {
      ranges.push(...named);
      continue;
    }
    const range = parseRange(entry);
    if (typeof range === 'string') ranges.push(range);
    else problems.push(`TRUST_PROXY entry ${JSON.stringify(entry.slice(0, 60))} ${range.problem}`);
  }
  return ranges;
}

function parseRange(entry: string): string | { problem: string } {
  const [text = '', prefixText, ...rest] = entry.split('/');
  // Zones name an interface of this machine: a proxy is named by its address alone.
  const address = text.includes('%') ? undefined : canonicalIp(text);
  if (address === undefined || rest.length > 0 || (prefixText !== undefined && !PREFIX.test(prefixText))) {
    return { problem: `is not ${ACCEPTED}` };
  }
  if (prefixText !== undefined && Number(prefixText) === 0) {
    return { problem: `trusts every address, as TRUST_PROXY=true would; ${INSTEAD}` };
  }
  const width = isIP(address) === 4 ? 32 : 128;
  // An IPv4-mapped range (::ffff:10.0.0.0/104) is kept as the IPv4 range it maps: addresses are compared as IPv4.
  const mapped = isIP(text) === 6 && width === 32;
  const prefix = prefixText === undefined ? width : Number(prefixText) - (mapped ? 96 : 0);
  if (prefix < 1 || prefix > width) {
    return { problem: `has a prefix outside ${mapped ? '97 to 128' : `1 to ${width}`}` };
  }
  const widest = width === 32 ? WIDEST_IPV4_PREFIX : WIDEST_IPV6_PREFIX;
  if (prefix < widest) {
    return {
      problem:
        `is wider than any network of proxies (/${widest} at most for ${width === 32 ? 'IPv4' : 'IPv6'}): ` +
        `such ranges trust a large part of the internet, and two of them every address, as TRUST_PROXY=true would; ${INSTEAD}`,
    };
  }
  if (width === 128 && holdsMappedIpv4(address, prefix)) {
    return {
      problem:
        'holds the IPv4-mapped addresses (::ffff:0:0/96), against which IPv4 peers are matched: it trusts every ' +
        `IPv4 client; ${INSTEAD}`,
    };
  }
  return `${address}/${prefix}`;
}

/** Whether an IPv6 range holds the IPv4-mapped block, which Node's BlockList matches IPv4 addresses against. */
function holdsMappedIpv4(network: string, prefix: number): boolean {
  const range = new BlockList();
  range.addSubnet(network, prefix, 'ipv6');
  return range.check('0.0.0.0', 'ipv4') || range.check('255.255.255.255', 'ipv4');
}

export interface ClientIpRules {
  readonly trustedProxies: readonly string[];
  /** A header holding the client's one address, honoured from trusted peers only (`cf-connecting-ip`). */
  readonly clientIpHeader: string | undefined;
}

export interface ClientIpResolver {
  isTrusted(address: string | undefined): boolean;
  resolve(
    peer: string | undefined,
    headers: Record<string, string | string[] | undefined>,
  ): string | undefined;
}

/**
 * Builds the resolver of a request's client address: the socket peer unless it is a trusted proxy; then the client IP
 * header, else the right-most untrusted X-Forwarded-For entry (the left part is whatever the client wrote).
 */
export function createClientIpResolver(rules: ClientIpRules): ClientIpResolver {
  const trusted = new BlockList();
  for (const range of rules.trustedProxies) {
    const [network = '', prefix] = range.split('/');
    trusted.addSubnet(network, Number(prefix), isIP(network) === 4 ? 'ipv4' : 'ipv6');
  }
  const isTrusted = (address: string | undefined) => {
    const ip = address === undefined ? undefined : canonicalIp(address);
    return ip !== undefined && trusted.check(ip, isIP(ip) === 4 ? 'ipv4' : 'ipv6');
  };
  const header = rules.clientIpHeader;
  return {
    isTrusted,
    resolve(peer, headers) {
      if (peer === undefined || !isTrusted(peer)) return peer;
      const stated = header === undefined ? undefined : headers[header];
      const fromHeader = typeof stated === 'string' ? canonicalIp(stated.trim()) : undefined;
      if (fromHeader !== undefined) return fromHeader;
      const forwarded = headers['x-forwarded-for'];
      if (typeof forwarded !== 'string') return peer;
      let nearest = peer;
      const hops = forwarded.split(',');
      for (let index = hops.length - 1, walked = 1; index >= 0; index -= 1, walked += 1) {
        const hop = forwardedAddress(hops[index]?.trim() ?? '');
        // An entry that is no address was written by the nearest hop: answering that hop, never the entry, keeps
        // made-up values out of logs and sessions, and out of the throttle's keys.
        if (hop === undefined) return nearest;
        if (!isTrusted(hop)) return hop;
        // No real chain is that long: past it, the request is the chain's own (found from outside: 2,500 loopback
        // entries from a local process, each read, held the event loop 20-29 ms).
        if (walked > MAX_TRUSTED_HOPS) return nearest;
        nearest = hop;
      }
      return nearest;
    },
  };
}

const MAX_TRUSTED_HOPS = 32;

// Some balancers (Azure's) append the peer's port: `203.0.113.7:4711`, `[2001:db8::1]:443`.
function forwardedAddress(entry: string): string | undefined {
  const bracketed = /^\[([^\]]+)\](?::\d{1,5})?$/.exec(entry);
  if (bracketed) return isIP(bracketed[1] ?? '') === 6 ? canonicalIp(bracketed[1] ?? '') : undefined;
  const withPort = /^(\d+\.\d+\.\d+\.\d+):\d{1,5}$/.exec(entry);
  return canonicalIp(withPort?.[1] ?? entry);
}

/** The bucket of every request whose address is missing or unreadable: such clients share one, never none. */
export const UNKNOWN_CLIENT = 'unknown';

/**
 * Returns the key that counts a client address: IPv4 as is (an IPv4-mapped IPv6 address too), IPv6 masked to its
 * first `ipv6SubnetBits` bits and written `prefix/bits`, since one subscriber usually holds a whole /64.
 */
export function clientIpKey(address: string | undefined, ipv6SubnetBits: number): string {
  if (!address) return UNKNOWN_CLIENT;
  const withoutZone = address.split('%')[0] ?? '';
  if (isIPv4(withoutZone)) return withoutZone;
  if (!isIPv6(withoutZone)) return UNKNOWN_CLIENT;
  const groups = ipv6Groups(withoutZone);
  if (isIpv4Mapped(groups)) {
    return [groups[6] >> 8, groups[6] & 255, groups[7] >> 8, groups[7] & 255].join('.');
  }
  const bits = Math.min(128, Math.max(0, ipv6SubnetBits));
  const masked = groups.map((group, index) => {
    const keep = Math.min(16, Math.max(0, bits - index * 16));
    return keep === 0 ? 0 : group & (0xffff << (16 - keep)) & 0xffff;
  });
  return `${formatIpv6(masked)}/${bits}`;
}

type Groups = [number, number, number, number, number, number, number, number];

function ipv6Groups(address: string): Groups {
  let text = address.toLowerCase();
  const dotted = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, dotted.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const parse = (part: string) => (part ? part.split(':').map((group) => Number.parseInt(group, 16)) : []);
  const left = parse(head);
  const right = tail === undefined ? [] : parse(tail);
  const zeros = new Array<number>(8 - left.length - right.length).fill(0);
  return [...left, ...zeros, ...right] as Groups;
}

const isIpv4Mapped = (groups: Groups) =>
  groups.slice(0, 5).every((group) => group === 0) && groups[5] === 0xffff;

/** RFC 5952: lower case, no leading zeros, the longest run of two or more zero groups as `::`. */
function formatIpv6(groups: number[]): string {
  let bestStart = -1;
  let bestLength = 1;
  for (let start = 0; start < groups.length; start += 1) {
    let length = 0;
    while (groups[start + length] === 0) length += 1;
    if (length > bestLength) {
      bestStart = start;
      bestLength = length;
    }
  }
  const hex = groups.map((group) => group.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`;
}
