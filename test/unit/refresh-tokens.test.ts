import { createSecretKey, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { RefreshToken } from '../../src/security/refresh-tokens.ts';
import {
  deriveSuccessor,
  formatRefreshToken,
  generateRefreshToken,
  hashRefreshSecret,
  parseRefreshToken,
  refreshSecretMatches,
} from '../../src/security/refresh-tokens.ts';

/** The wire form: a 128-bit id and a 256-bit secret, each unpadded base64url, joined by one dot. */
const WIRE_FORM = /^[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}$/;
const BASE64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/** A token as the server could issue it, from any 16 id bytes and 32 secret bytes. */
const anyToken = fc
  .record({
    id: fc.uint8Array({ minLength: 16, maxLength: 16 }),
    secret: fc.uint8Array({ minLength: 32, maxLength: 32 }),
  })
  .map(
    ({ id, secret }): RefreshToken => ({
      id: Buffer.from(id).toString('base64url'),
      secret: Buffer.from(secret).toString('base64url'),
    }),
  );

/** Characters a mangled token may carry: separators, padding, base64 (not url) letters, space, lookalikes, astral. */
const strayChar = fc.constantFrom(
  '.',
  '=',
  '+',
  '/',
  ' ',
  '\t',
  '\n',
  '\r',
  '\u00a0',
  '\u200b',
  '\u0000',
  '%',
  'А', // CYRILLIC CAPITAL A
  'о', // CYRILLIC SMALL O
  'Ａ', // FULLWIDTH A
  '０', // FULLWIDTH ZERO
  '‐', // HYPHEN
  '＿', // FULLWIDTH LOW LINE
  'é',
  '😀',
  ...BASE64URL,
);

/** A wire-form token with one character replaced, inserted or deleted. */
const mangledToken = fc
  .tuple(
    anyToken.map(formatRefreshToken),
    fc.nat(),
    strayChar,
    fc.constantFrom('replace', 'insert', 'delete'),
  )
  .map(([wire, at, c, edit]) => {
    const i = at % wire.length;
    if (edit === 'replace') return wire.slice(0, i) + c + wire.slice(i + 1);
    if (edit === 'insert') return wire.slice(0, i) + c + wire.slice(i);
    return wire.slice(0, i) + wire.slice(i + 1);
  });

/** A fixed, valid token to mangle by hand. */
const TOKEN: RefreshToken = {
  id: Buffer.alloc(16, 0x5a).toString('base64url'),
  secret: Buffer.alloc(32, 0xa5).toString('base64url'),
};
const WIRE = formatRefreshToken(TOKEN);
const { id: ID, secret: SECRET } = TOKEN;
/** Replaces the character at `index` of `s` (same length, so only the alphabet check can refuse it). */
const replaceAt = (s: string, index: number, c: string) => s.slice(0, index) + c + s.slice(index + 1);

/** The other last characters that decode to the same bytes: base64url leaves the last character's low bits over. */
function nonCanonicalSpellings(part: string): string[] {
  const bytes = Buffer.from(part, 'base64url');
  return [...BASE64URL]
    .map((c) => part.slice(0, -1) + c)
    .filter((s) => s !== part && Buffer.from(s, 'base64url').equals(bytes));
}

describe('refresh token wire form', () => {
  it('reads back a generated token exactly as it was formatted', () => {
    const token = generateRefreshToken();
    const wire = formatRefreshToken(token);
    expect(wire).toMatch(WIRE_FORM);
    expect(parseRefreshToken(wire)).toEqual(token);
  });

  it('reads back any 128-bit id and 256-bit secret exactly as formatted', () => {
    fc.assert(
      fc.property(anyToken, (token) => {
        expect(parseRefreshToken(formatRefreshToken(token))).toEqual(token);
      }),
    );
  });

  it('generates a 128-bit id and a 256-bit secret, different every time', () => {
    const tokens = Array.from({ length: 50 }, generateRefreshToken);
    for (const { id, secret } of tokens) {
      expect(Buffer.from(id, 'base64url')).toHaveLength(16);
      expect(Buffer.from(secret, 'base64url')).toHaveLength(32);
    }
    expect(new Set(tokens.map((t) => t.id)).size).toBe(tokens.length);
    expect(new Set(tokens.map((t) => t.secret)).size).toBe(tokens.length);
  });
});

describe('parsing refuses what cannot be a refresh token', () => {
  const refusals: Array<[string, string]> = [
    ['the empty string', ''],
    ['no separator', ID + SECRET],
    ['only a separator', '.'],
    ['an empty id', `.${SECRET}`],
    ['an empty secret', `${ID}.`],
    ['a trailing separator', `${WIRE}.`],
    ['a leading separator', `.${WIRE}`],
    ['two separators in a row', `${ID}..${SECRET}`],
    ['a third part', `${WIRE}.${SECRET}`],
    ['a JWT', 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmUtc2ln'],
    ['a separator in place of an id character', replaceAt(WIRE, 10, '.')],
    ['a separator in place of a secret character', replaceAt(WIRE, 40, '.')],
    ['an id one character short', `${ID.slice(1)}.${SECRET}`],
    ['an id one character long', `${ID}A.${SECRET}`],
    ['a secret one character short', `${ID}.${SECRET.slice(1)}`],
    ['a secret one character long', `${ID}.${SECRET}A`],
    ['id and secret swapped', `${SECRET}.${ID}`],
    ['the secret alone', SECRET],
    ['the id and secret both of the secret length', `${SECRET}.${SECRET}`],
    ['padding after the id', `${ID}==.${SECRET}`],
    ['padding after the secret', `${ID}.${SECRET}=`],
    ['padding in place of the last id character', `${replaceAt(ID, 21, '=')}.${SECRET}`],
    ['padding in place of the last secret character', `${ID}.${replaceAt(SECRET, 42, '=')}`],
    ['base64 "+" in place of a base64url character', replaceAt(WIRE, 3, '+')],
    ['base64 "/" in place of a base64url character', replaceAt(WIRE, 30, '/')],
    ['a leading space', ` ${WIRE}`],
    ['a trailing space', `${WIRE} `],
    ['a trailing newline', `${WIRE}\n`],
    ['a trailing CRLF', `${WIRE}\r\n`],
    ['a space in place of an id character', replaceAt(WIRE, 5, ' ')],
    ['a tab in place of a secret character', replaceAt(WIRE, 50, '\t')],
    ['a newline in place of the last character', replaceAt(WIRE, WIRE.length - 1, '\n')],
    ['a space around the separator', `${ID.slice(0, -1)} .${SECRET}`],
    ['a no-break space in place of a character', replaceAt(WIRE, 12, '\u00a0')],
    ['a zero-width space in place of a character', replaceAt(WIRE, 44, '\u200b')],
    ['a NUL in place of a character', replaceAt(WIRE, 7, '\u0000')],
    ['a Cyrillic А in place of a character', replaceAt(WIRE, 0, 'А')],
    ['a Cyrillic о in place of a character', replaceAt(WIRE, 33, 'о')],
    ['a fullwidth Ａ in place of a character', replaceAt(WIRE, 20, 'Ａ')],
    ['a fullwidth digit in place of a character', replaceAt(WIRE, 60, '０')],
    ['a Unicode hyphen (U+2010) in place of a character', replaceAt(WIRE, 25, '‐')],
    ['an accented letter in place of a character', replaceAt(WIRE, 15, 'é')],
    ['an emoji in place of two characters', `${WIRE.slice(0, 40)}😀${WIRE.slice(42)}`],
    ['the id percent-encoded', `${encodeURIComponent(`${ID}=`)}.${SECRET}`],
    ['a very long token', `${'A'.repeat(100_000)}.${'B'.repeat(100_000)}`],
    ['a very long run of separators', '.'.repeat(100_000)],
    ['the wire form repeated', `${WIRE}${WIRE}`],
  ];

  it.each(refusals)('refuses %s', (_what, value) => {
    expect(value).not.toBe(WIRE);
    expect(parseRefreshToken(value)).toBeUndefined();
  });

  it('accepts the unmangled token the refusals above are made from', () => {
    expect(parseRefreshToken(WIRE)).toEqual(TOKEN);
  });

  it('accepts only the wire form, and gives back parts that format to exactly the input', () => {
    fc.assert(
      fc.property(fc.oneof(mangledToken, fc.string({ unit: 'grapheme', maxLength: 80 })), (value) => {
        const parsed = parseRefreshToken(value);
        if (parsed === undefined) return;
        expect(value).toMatch(WIRE_FORM);
        expect(formatRefreshToken(parsed)).toBe(value);
      }),
      { numRuns: 2000 },
    );
  });

  it('refuses an id or secret spelled with a non-canonical last character (same bytes, other spelling)', () => {
    const token = generateRefreshToken();
    // The last character carries 2 (id) or 4 (secret) bits of padding that canonical base64url leaves at zero.
    const respell = (part: string) => {
      const last = BASE64URL.indexOf(part.at(-1) ?? '');
      return `${part.slice(0, -1)}${BASE64URL[last | 1]}`;
    };
    const id = respell(token.id);
    const secret = respell(token.secret);
    expect(Buffer.from(id, 'base64url')).toEqual(Buffer.from(token.id, 'base64url'));
    expect(Buffer.from(secret, 'base64url')).toEqual(Buffer.from(token.secret, 'base64url'));
    expect(parseRefreshToken(`${id}.${token.secret}`)).toBeUndefined();
    expect(parseRefreshToken(`${token.id}.${secret}`)).toBeUndefined();
    expect(parseRefreshToken(formatRefreshToken(token))).toEqual(token);
  });
});

describe('stored secret hash', () => {
  it('matches the secret it was computed from', () => {
    fc.assert(
      fc.property(anyToken, ({ secret }) => {
        expect(refreshSecretMatches(secret, hashRefreshSecret(secret))).toBe(true);
      }),
    );
  });

  it('does not match any other secret', () => {
    fc.assert(
      fc.property(anyToken, anyToken, (a, b) => {
        fc.pre(a.secret !== b.secret);
        expect(refreshSecretMatches(b.secret, hashRefreshSecret(a.secret))).toBe(false);
      }),
    );
  });

  it('does not match a secret that differs in one character', () => {
    const stored = hashRefreshSecret(SECRET);
    for (const i of [0, 21, 42]) {
      const other = replaceAt(SECRET, i, SECRET[i] === 'A' ? 'B' : 'A');
      expect(refreshSecretMatches(other, stored), `character ${i}`).toBe(false);
    }
  });

  it('does not match another spelling of the same secret bytes (a non-canonical last character)', () => {
    const spellings = nonCanonicalSpellings(SECRET);
    expect(spellings.length, 'no other spelling exists: the check would be vacuous').toBeGreaterThan(0);
    const stored = hashRefreshSecret(SECRET);
    for (const spelling of spellings) expect(refreshSecretMatches(spelling, stored), spelling).toBe(false);
  });

  it('does not match a secret that is a prefix or an extension of the right one', () => {
    const stored = hashRefreshSecret(SECRET);
    for (const other of ['', SECRET.slice(0, -1), `${SECRET}A`, `${SECRET}${SECRET}`])
      expect(refreshSecretMatches(other, stored), other).toBe(false);
  });

  it('refuses, without throwing, a stored hash of another length', () => {
    const stored = hashRefreshSecret(SECRET);
    for (const hash of ['', stored.slice(0, -1), `${stored}A`, `${stored}=`, stored + stored])
      expect(refreshSecretMatches(SECRET, hash), JSON.stringify(hash)).toBe(false);
  });

  it('does not store the secret itself', () => {
    fc.assert(
      fc.property(anyToken, ({ secret }) => {
        const stored = hashRefreshSecret(secret);
        expect(stored).not.toContain(secret);
      }),
    );
  });
});

describe('successor derivation', () => {
  const KEY = createSecretKey(randomBytes(32));
  const OTHER_KEY = createSecretKey(randomBytes(32));
  const anyKey = fc
    .uint8Array({ minLength: 32, maxLength: 32 })
    .map((bytes) => createSecretKey(Buffer.from(bytes)));

  it('gives the same successor for the same parent and key (a retry gets the very same token)', () => {
    fc.assert(
      fc.property(anyToken, anyKey, (parent, key) => {
        expect(deriveSuccessor({ ...parent }, createSecretKey(key.export()))).toEqual(
          deriveSuccessor(parent, key),
        );
      }),
    );
  });

  /** Two successors share neither their id nor their secret. */
  const expectUnrelated = (a: RefreshToken, b: RefreshToken) => {
    expect(b.id).not.toBe(a.id);
    expect(b.secret).not.toBe(a.secret);
  };

  it('gives another successor under another key', () => {
    fc.assert(
      fc.property(anyToken, anyKey, anyKey, (parent, key, otherKey) => {
        fc.pre(!key.equals(otherKey));
        expectUnrelated(deriveSuccessor(parent, key), deriveSuccessor(parent, otherKey));
      }),
    );
  });

  it('gives another successor for another parent', () => {
    fc.assert(
      fc.property(anyToken, anyToken, (parent, other) => {
        fc.pre(parent.id !== other.id && parent.secret !== other.secret);
        expectUnrelated(deriveSuccessor(parent, KEY), deriveSuccessor(other, KEY));
      }),
    );
  });

  it('gives a successor in the wire form, unlike its parent, that parses back to itself', () => {
    fc.assert(
      fc.property(anyToken, anyKey, (parent, key) => {
        const successor = deriveSuccessor(parent, key);
        const wire = formatRefreshToken(successor);
        expect(wire).toMatch(WIRE_FORM);
        expect(parseRefreshToken(wire)).toEqual(successor);
        expect(successor.id).not.toBe(parent.id);
        expect(successor.secret).not.toBe(parent.secret);
        expect(Buffer.from(successor.id, 'base64url')).toHaveLength(16);
        expect(Buffer.from(successor.secret, 'base64url')).toHaveLength(32);
      }),
    );
  });

  it('walks a family of distinct tokens, each a successor of the one before', () => {
    const family = [generateRefreshToken()];
    for (let i = 0; i < 100; i++) family.push(deriveSuccessor(family.at(-1)!, KEY));
    expect(new Set(family.map(formatRefreshToken)).size).toBe(family.length);
    const underOtherKey = deriveSuccessor(family[0]!, OTHER_KEY);
    expect(formatRefreshToken(underOtherKey)).not.toBe(formatRefreshToken(family[1]!));
  });
});
