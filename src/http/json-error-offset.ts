// FastAPI puts into a json_invalid error's loc the offset at which Python's json module (its C scanner) stopped, in
// characters; JSON.parse stops elsewhere (it reads `\q` one character further, and reports a truncated literal at the
// end of the text), so the offset is found again by scanning the text as that module does. Only on the error path.

const WHITESPACE = new Set([' ', '\t', '\n', '\r']);
const ESCAPES = new Set(['"', '\\', '/', 'b', 'f', 'n', 'r', 't']);
const HEX_DIGIT = /^[0-9a-fA-F]$/;
const LITERALS = ['null', 'true', 'false', 'NaN', 'Infinity', '-Infinity'];

const isDigit = (character: string | undefined) =>
  character !== undefined && character >= '0' && character <= '9';

/** Thrown with the offset at which the scanner stopped. */
class Stopped {
  readonly offset: number;
  constructor(offset: number) {
    this.offset = offset;
  }
}

/**
 * The offset, in characters (code points, as Python counts them), at which Python's `json.loads` fails on `text`; 0
 * when it would not fail (it takes NaN and lone surrogates, which JSON.parse refuses).
 */
export function jsonErrorOffset(text: string): number {
  const characters = Array.from(text.startsWith('\ufeff') ? text.slice(1) : text);
  try {
    scan(characters);
    return 0;
  } catch (error) {
    if (error instanceof Stopped) return error.offset;
    throw error;
  }
}

function scan(characters: string[]): void {
  const length = characters.length;
  let index = 0;
  const skipWhitespace = () => {
    while (index < length && WHITESPACE.has(characters[index] as string)) index += 1;
  };
  // The index after the string whose opening quote is just before `start`.
  const scanString = (start: number): number => {
    const opening = start - 1;
    let next = start;
    for (;;) {
      let character: string | undefined;
      for (; next < length; next += 1) {
        character = characters[next] as string;
        if (character === '"' || character === '\\') break;
        if (character.codePointAt(0)! <= 0x1f) throw new Stopped(next);
      }
      if (next >= length) throw new Stopped(opening);
      next += 1;
      if (character === '"') return next;
      if (next === length) throw new Stopped(opening);
      if (characters[next] !== 'u') {
        if (!ESCAPES.has(characters[next] as string)) throw new Stopped(next - 1);
        next += 1;
        continue;
      }
      next += 1;
      const end = next + 4;
      if (end >= length) throw new Stopped(next - 1);
      let unit = '';
      for (; next < end; next += 1) {
        if (!HEX_DIGIT.test(characters[next] as string)) throw new Stopped(end - 5);
        unit += characters[next];
      }
      const code = Number.parseInt(unit, 16);
      // A high surrogate takes the escape after it as its pair when one follows, whatever it turns out to be.
      if (
        code >= 0xd800 &&
        code <= 0xdbff &&
        end + 6 < length &&
        characters[end] === '\\' &&
        characters[end + 1] === 'u'
      ) {
        for (next = end + 2; next < end + 6; next += 1) {
          if (!HEX_DIGIT.test(characters[next] as string)) throw new Stopped(end + 1);
        }
      }
      next = Math.max(next, end);
    }
  };
  // The index after the number at `start`, or a stop there: Python's NUMBER_RE, reading as far as it matches.
  const scanNumber = (start: number): number => {
    let next = start;
    if (characters[next] === '-') {
      next += 1;
      if (next >= length) throw new Stopped(start);
    }
    if (characters[next] === '0') next += 1;
    else if (isDigit(characters[next]) && characters[next] !== '0') {
      while (isDigit(characters[next])) next += 1;
    } else throw new Stopped(start);
    if (characters[next] === '.' && isDigit(characters[next + 1])) {
      next += 2;
      while (isDigit(characters[next])) next += 1;
    }
    if (characters[next] === 'e' || characters[next] === 'E') {
      const exponentStart = next;
      next += 1;
      if (characters[next] === '-' || characters[next] === '+') next += 1;
      while (isDigit(characters[next])) next += 1;
      if (!isDigit(characters[next - 1])) next = exponentStart;
    }
    return next;
  };
  // An object's member name and its colon, leaving `index` where the value starts.
  const scanName = () => {
    if (characters[index] !== '"') throw new Stopped(index);
    index = scanString(index + 1);
    skipWhitespace();
    if (characters[index] !== ':') throw new Stopped(index);
    index += 1;
    skipWhitespace();
  };

  // Open arrays and objects, innermost last: iterative, so that deep nesting cannot overflow the stack.
  const open: ('[' | '{')[] = [];
  skipWhitespace();
  for (;;) {
    const character = characters[index];
    if (character === undefined) throw new Stopped(index);
    if (character === '"') index = scanString(index + 1);
    else if (character === '{' || character === '[') {
      index += 1;
      skipWhitespace();
      const closing = character === '{' ? '}' : ']';
      if (characters[index] === closing) index += 1;
      else {
        if (character === '{') scanName();
        open.push(character);
        continue;
      }
    } else {
      const literal = LITERALS.find((word) => characters.slice(index, index + word.length).join('') === word);
      index = literal === undefined ? scanNumber(index) : index + literal.length;
    }
    // A value ended: close what it ends, or go on to the next member.
    for (;;) {
      skipWhitespace();
      const container = open.at(-1);
      if (container === undefined) {
        if (index < length) throw new Stopped(index);
        return;
      }
      if (characters[index] === (container === '{' ? '}' : ']')) {
        index += 1;
        open.pop();
        continue;
      }
      if (characters[index] !== ',') throw new Stopped(index);
      index += 1;
      skipWhitespace();
      if (container === '{') scanName();
      break;
    }
  }
}
