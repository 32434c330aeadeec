// FastAPI puts into a json_invalid error's loc the offset at which Python's json module (its C scanner) stopped, in
// characters; JSON.parse stops elsewhere (it reads `\q` one character further, and reports a truncated literal at the
// end of the text), so the offset is found again by scanning the text as that module does. Only on the error path,
// and in one pass over the text as it is (a copy into single characters cost 60 times a parse).

const SPACE = 0x20;
const TAB = 0x09;
const LINE_FEED = 0x0a;
const CARRIAGE_RETURN = 0x0d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const ZERO = 0x30;
const NINE = 0x39;
const MINUS = 0x2d;
const PLUS = 0x2b;
const DOT = 0x2e;
const COMMA = 0x2c;
const COLON = 0x3a;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;
const LOWER_E = 0x65;
const UPPER_E = 0x45;
const LOWER_U = 0x75;
// The escapes after a backslash other than \u: " \ / b f n r t.
const ESCAPES = new Set([0x22, 0x5c, 0x2f, 0x62, 0x66, 0x6e, 0x72, 0x74]);
const LITERALS = ['null', 'true', 'false', 'NaN', 'Infinity', '-Infinity'];

const isDigit = (code: number) => code >= ZERO && code <= NINE;
const isHexDigit = (code: number) =>
  isDigit(code) || (code >= 0x41 && code <= 0x46) || (code >= 0x61 && code <= 0x66);

/** Thrown with the offset (in UTF-16 units) at which the scanner stopped. */
class Stopped {
  readonly offset: number;
  constructor(offset: number) {
    this.offset = offset;
  }
}

/** A number JSON has no word for, written as Python's json module reads it. */
export interface NonFiniteLiteral {
  index: number;
  word: string;
}

const NON_FINITE_WORDS = new Set(['NaN', 'Infinity', '-Infinity']);

/**
 * Where the text, which JSON.parse refused, holds NaN, Infinity or -Infinity that Python's `json.loads` (FastAPI's
 * reader of bodies) takes as numbers: their places in the text without its byte order mark, or undefined when Python
 * would refuse the text too or finds none in it.
 */
export function findNonFiniteLiterals(
  text: string,
): { body: string; literals: NonFiniteLiteral[] } | undefined {
  const body = text.startsWith('\ufeff') ? text.slice(1) : text;
  const literals: NonFiniteLiteral[] = [];
  try {
    scan(body, literals);
  } catch (error) {
    if (error instanceof Stopped) return undefined;
    throw error;
  }
  return literals.length > 0 ? { body, literals } : undefined;
}

/**
 * The offset, in characters (code points, as Python counts them), at which Python's `json.loads` fails on `text`; 0
 * when it would not fail (it takes NaN and lone surrogates, which JSON.parse refuses).
 */
export function jsonErrorOffset(text: string): number {
  const body = text.startsWith('\ufeff') ? text.slice(1) : text;
  let offset: number;
  try {
    scan(body);
    return 0;
  } catch (error) {
    if (!(error instanceof Stopped)) throw error;
    offset = error.offset;
  }
  // Python counts a character outside the BMP once, where the offset counts its two UTF-16 units.
  let pairs = 0;
  for (let index = 0; index + 1 < offset; index += 1) {
    const code = body.charCodeAt(index);
    if (code >= 0xd800 && code <= 0xdbff) {
      const next = body.charCodeAt(index + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        pairs += 1;
        index += 1;
      }
    }
  }
  return offset - pairs;
}

function scan(text: string, nonFinite?: NonFiniteLiteral[]): void {
  const length = text.length;
  let index = 0;
  const skipWhitespace = () => {
    for (;;) {
      const code = text.charCodeAt(index);
      if (code !== SPACE && code !== TAB && code !== LINE_FEED && code !== CARRIAGE_RETURN) return;
      index += 1;
    }
  };
  // The index after the string whose opening quote is just before `start`.
  const scanString = (start: number): number => {
    const opening = start - 1;
    let next = start;
    for (;;) {
      let code = -1;
      for (; next < length; next += 1) {
        code = text.charCodeAt(next);
        if (code === QUOTE || code === BACKSLASH) break;
        if (code <= 0x1f) throw new Stopped(next);
      }
      if (next >= length) throw new Stopped(opening);
      next += 1;
      if (code === QUOTE) return next;
      if (next === length) throw new Stopped(opening);
      if (text.charCodeAt(next) !== LOWER_U) {
        if (!ESCAPES.has(text.charCodeAt(next))) throw new Stopped(next - 1);
        next += 1;
        continue;
      }
      next += 1;
      const end = next + 4;
      if (end >= length) throw new Stopped(next - 1);
      for (; next < end; next += 1) {
        if (!isHexDigit(text.charCodeAt(next))) throw new Stopped(end - 5);
      }
      const unit = Number.parseInt(text.slice(end - 4, end), 16);
      // A high surrogate takes the escape after it as its pair when one follows, whatever it turns out to be.
      if (
        unit >= 0xd800 &&
        unit <= 0xdbff &&
        end + 6 < length &&
        text.charCodeAt(end) === BACKSLASH &&
        text.charCodeAt(end + 1) === LOWER_U
      ) {
        for (next = end + 2; next < end + 6; next += 1) {
          if (!isHexDigit(text.charCodeAt(next))) throw new Stopped(end + 1);
        }
      }
      next = Math.max(next, end);
    }
  };
  // The index after the number at `start`, or a stop there: Python's NUMBER_RE, reading as far as it matches.
  const scanNumber = (start: number): number => {
    let next = start;
    if (text.charCodeAt(next) === MINUS) {
      next += 1;
      if (next >= length) throw new Stopped(start);
    }
    if (text.charCodeAt(next) === ZERO) next += 1;
    else if (isDigit(text.charCodeAt(next))) {
      while (isDigit(text.charCodeAt(next))) next += 1;
    } else throw new Stopped(start);
    if (text.charCodeAt(next) === DOT && isDigit(text.charCodeAt(next + 1))) {
      next += 2;
      while (isDigit(text.charCodeAt(next))) next += 1;
    }
    const exponent = text.charCodeAt(next);
    if (exponent === LOWER_E || exponent === UPPER_E) {
      const exponentStart = next;
      next += 1;
      const sign = text.charCodeAt(next);
      if (sign === MINUS || sign === PLUS) next += 1;
      while (isDigit(text.charCodeAt(next))) next += 1;
      if (!isDigit(text.charCodeAt(next - 1))) next = exponentStart;
    }
    return next;
  };
  // An object's member name and its colon, leaving `index` where the value starts.
  const scanName = () => {
    if (text.charCodeAt(index) !== QUOTE) throw new Stopped(index);
    index = scanString(index + 1);
    skipWhitespace();
    if (text.charCodeAt(index) !== COLON) throw new Stopped(index);
    index += 1;
    skipWhitespace();
  };

  // Open arrays and objects, innermost last: iterative, so that deep nesting cannot overflow the stack.
  const open: number[] = [];
  skipWhitespace();
  for (;;) {
    if (index >= length) throw new Stopped(index);
    const code = text.charCodeAt(index);
    if (code === QUOTE) index = scanString(index + 1);
    else if (code === OPEN_OBJECT || code === OPEN_ARRAY) {
      index += 1;
      skipWhitespace();
      const closing = code === OPEN_OBJECT ? CLOSE_OBJECT : CLOSE_ARRAY;
      if (text.charCodeAt(index) === closing) index += 1;
      else {
        if (code === OPEN_OBJECT) scanName();
        open.push(closing);
        continue;
      }
    } else {
      const literal = isDigit(code) ? undefined : LITERALS.find((word) => text.startsWith(word, index));
      if (literal !== undefined && NON_FINITE_WORDS.has(literal)) nonFinite?.push({ index, word: literal });
      index = literal === undefined ? scanNumber(index) : index + literal.length;
    }
    // A value ended: close what it ends, or go on to the next member.
    for (;;) {
      skipWhitespace();
      const closing = open.at(-1);
      if (closing === undefined) {
        if (index < length) throw new Stopped(index);
        return;
      }
      if (text.charCodeAt(index) === closing) {
        index += 1;
        open.pop();
        continue;
      }
      if (text.charCodeAt(index) !== COMMA) throw new Stopped(index);
      index += 1;
      skipWhitespace();
      if (closing === CLOSE_OBJECT) scanName();
      break;
    }
  }
}
