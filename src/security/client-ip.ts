import { isIPv4, isIPv6 } from 'node:net';

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
