import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { countDelimiters, repeatsAName } from '../../src/http/body-parsers.ts';

/** A reference: a recursive-descent reader of JSON text that reports the first object naming a member twice. */
function referenceRepeats(text: string): boolean {
  let at = 0;
  const space = () => {
    while (/[ \t\n\r\uFEFF]/.test(text[at] ?? '')) at += 1;
  };
  const string = (): string => {
    const start = at;
    at += 1;
    while (text[at] !== '"') at += text[at] === '\\' ? 2 : 1;
    at += 1;
    return JSON.parse(text.slice(start, at)) as string;
  };
  const value = (): boolean => {
    space();
    const character = text[at];
    if (character === '{') {
      at += 1;
      const names = new Set<string>();
      let repeated = false;
      space();
      if (text[at] === '}') {
        at += 1;
        return false;
      }
      for (;;) {
        space();
        const name = string();
        if (names.has(name)) repeated = true;
        names.add(name);
        space();
        at += 1; // :
        if (value()) repeated = true;
        space();
        if (text[at++] === '}') return repeated;
      }
    }
    if (character === '[') {
      at += 1;
      let repeated = false;
      space();
      if (text[at] === ']') {
        at += 1;
        return false;
      }
      for (;;) {
        if (value()) repeated = true;
        space();
        if (text[at++] === ']') return repeated;
      }
    }
    if (character === '"') {
      string();
      return false;
    }
    while (at < text.length && !/[,\]} \t\n\r]/.test(text[at] ?? '')) at += 1;
    return false;
  };
  return value();
}

// Names from a small alphabet, so that objects often repeat one; spelled plainly or with escapes.
const name = fc.constantFrom('a', 'b', 'username', 'pass"word', 'back\\slash', '', 'é', '\u0000');
const spelled = name.chain((text) =>
  fc.constantFrom(
    JSON.stringify(text),
    `"${[...text].map((character) => `\\u${character.charCodeAt(0).toString(16).padStart(4, '0')}`).join('')}"`,
  ),
);
const gap = fc.constantFrom('', ' ', '\n\t ');
const json: fc.Arbitrary<string> = fc.letrec((tie) => ({
  value: fc.oneof(
    { depthSize: 'small' },
    fc.constantFrom('1', '-2.5e3', 'true', 'null', '"{\\"a\\":1,\\"a\\":2}"', '"x\\\\"', '"a,b:c"'),
    tie('object'),
    tie('array'),
  ),
  object: fc
    .array(fc.tuple(spelled, gap, tie('value') as fc.Arbitrary<string>), { maxLength: 4 })
    .map(
      (members) =>
        `{${members.map(([key, space, item]) => `${space}${key}${space}:${space}${item}`).join(',')}}`,
    ),
  array: fc
    .array(tie('value') as fc.Arbitrary<string>, { maxLength: 4 })
    .map((items) => `[${items.join(' , ')}]`),
})).value as fc.Arbitrary<string>;

describe('repeatsAName', () => {
  it.each([
    ['{"a":1,"a":2}', true],
    ['{"a":1,"\\u0061":2}', true],
    ['{"a":{"b":1},"b":2}', false],
    ['[{"a":1},{"a":2}]', false],
    ['{"a":"\\"a\\":","b":[1,{"a":1,"a":1}]}', true],
    ['{"x\\\\":1,"x\\\\":2}', true],
    ['{"a":[],"b":{},"a":null}', true],
    ['"{\\"a\\":1,\\"a\\":2}"', false],
    ['{}', false],
  ])('reads %s as %s', (text, expected) => {
    JSON.parse(text);
    expect(repeatsAName(text)).toBe(expected);
  });

  it('agrees with a reference reader on any JSON text', () => {
    fc.assert(
      fc.property(json, (text) => {
        JSON.parse(text);
        expect(repeatsAName(text)).toBe(referenceRepeats(text));
      }),
      { numRuns: 3000 },
    );
  });
});

// The multipart parser refuses a body of more delimiters than its parts may be before busboy reads one (found from
// outside: 1,790 empty parts in 16 KB cost 20 ms of the event loop).
describe('countDelimiters', () => {
  it('counts every delimiter of the boundary the content type names, quoted or not, and none without one', () => {
    const body = Buffer.from('--ab\r\nx\r\n--ab\r\n\r\n\r\n--ab--\r\n');
    expect(countDelimiters(body, 'multipart/form-data; boundary=ab')).toBe(3);
    expect(countDelimiters(body, 'multipart/form-data; boundary="ab"')).toBe(3);
    expect(countDelimiters(body, 'multipart/form-data; boundary=zz')).toBe(0);
    expect(countDelimiters(body, 'multipart/form-data')).toBe(0);
    expect(countDelimiters(Buffer.from('--a'.repeat(5000)), 'multipart/form-data; boundary=a')).toBe(5000);
  });
});
