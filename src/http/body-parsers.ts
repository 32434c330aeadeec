import { isUtf8 } from 'node:buffer';
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import { Busboy, type BusboyHeaders, type BusboyInstance } from '@fastify/busboy';
import { parse as parseQueryString } from 'fast-querystring';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { AppError } from '../errors.ts';
import { findNonFiniteLiterals, jsonErrorOffset, type NonFiniteLiteral } from './json-error-offset.ts';

// Read as the error table's malformed body: 422 json_invalid, or 400 invalid_request on the token endpoint.
const malformed = (message: string, code: string) =>
  Object.assign(new Error(message), { statusCode: 400, code });
const notUtf8 = () => malformed('The request body is not UTF-8', 'GATEHOUSE_BODY_NOT_UTF8');

/**
 * JSON bodies must be UTF-8 (RFC 8259 §8.1). Fastify decodes them with a replacing decoder, which turns every stray
 * byte into U+FFFD: a password sent in Latin-1 was stored with U+FFFD in it, and any other stray byte in its place
 * logged in too. Such a body is refused instead; the rest is Fastify's own parser (prototype poisoning refused).
 */
export function registerJsonParser(app: FastifyInstance): void {
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    // A route that takes no body (a sign-out) reads none, whatever type a client library names: an empty one was a
    // 422 that left the caller signed in, and so was one the client library filled. A path no route takes answers
    // 404 or 405, not a body error.
    if (request.is404 || request.routeOptions.schema?.body === undefined) {
      done(null, undefined);
      return;
    }
    if (!isUtf8(body as Buffer)) {
      done(notUtf8(), undefined);
      return;
    }
    const text = (body as Buffer).toString('utf8');
    const parsed = (value: unknown) => {
      // FastAPI takes a body of null for no body: its fields are not listed, the body is missing.
      if (value === null)
        done(
          new AppError('validation_failed', 'Missing body', {
            details: [{ loc: ['body'], msg: 'Field required', type: 'missing' }],
          }),
          undefined,
        );
      else if (repeatsAName(text))
        done(malformed('A JSON object names a member twice', 'GATEHOUSE_JSON_DUPLICATE_NAME'), undefined);
      else done(null, value);
    };
    parseJson(request, text, (error, value) => {
      if (!error) return parsed(value);
      const refused = () => done(Object.assign(error, { jsonErrorOffset: jsonErrorOffset(text) }), undefined);
      // Python's json module, FastAPI's, reads NaN and ±Infinity as numbers (Python's `requests` writes float('nan')
      // so): a member holding one is then ignored or refused by its schema, not the whole body (found in a
      // differential test against the seed). Read through Fastify's parser again, each of them as a marked string.
      const nonFinite = findNonFiniteLiterals(text);
      if (!nonFinite) return refused();
      parseJson(request, markNonFinite(nonFinite), (again, marked) => {
        if (again) refused();
        else parsed(restoreNonFinite(marked));
      });
    });
  });
}

// A string no client can guess stands in for each non-finite number while the text is parsed.
const NON_FINITE_MARK = `\u0000${randomUUID()}:`;
const NON_FINITE_NUMBERS = new Map([
  [`${NON_FINITE_MARK}NaN`, Number.NaN],
  [`${NON_FINITE_MARK}Infinity`, Number.POSITIVE_INFINITY],
  [`${NON_FINITE_MARK}-Infinity`, Number.NEGATIVE_INFINITY],
]);

function markNonFinite({ body, literals }: { body: string; literals: NonFiniteLiteral[] }): string {
  let marked = '';
  let from = 0;
  for (const { index, word } of literals) {
    marked += body.slice(from, index) + JSON.stringify(NON_FINITE_MARK + word);
    from = index + word.length;
  }
  return marked + body.slice(from);
}

// Iterative: a body may nest deeper than the stack would let a recursion go.
function restoreNonFinite(value: unknown): unknown {
  if (typeof value === 'string') return NON_FINITE_NUMBERS.get(value) ?? value;
  const pending: unknown[] = [value];
  for (let node = pending.pop(); node !== undefined; node = pending.pop()) {
    if (node === null || typeof node !== 'object') continue;
    const container = node as Record<string, unknown>;
    for (const key of Object.keys(container)) {
      const child = container[key];
      if (typeof child === 'string') {
        const number = NON_FINITE_NUMBERS.get(child);
        if (number !== undefined) container[key] = number;
      } else if (child !== null && typeof child === 'object') pending.push(child);
    }
  }
  return value;
}

/**
 * Any other type: a route that takes no body (a sign-out) reads none, as with JSON above (`curl -d ''` and jQuery's
 * `$.post` name a form, which met 415 and left the caller signed in), and a path no route takes answers 404 or 405 as
 * without this parser; a route that takes a body answers 415 as before. Nothing is read here: what the client still
 * sends after the answer is drained or the connection closed (registerResponseHooks), as after any early answer.
 */
export function registerBodilessRoutesParser(app: FastifyInstance): void {
  app.addContentTypeParser('*', (request, _payload, done) => {
    if (request.is404 || request.routeOptions.schema?.body === undefined) done(null, undefined);
    else done(new AppError('unsupported_media_type', 'Unsupported Media Type'), undefined);
  });
}

const QUOTE = 34;
const BACKSLASH = 92;
const OPEN_OBJECT = 123;
const CLOSE_OBJECT = 125;
const OPEN_ARRAY = 91;
const CLOSE_ARRAY = 93;
const COMMA = 44;

/**
 * Whether an object of this JSON text, which has parsed, names a member twice. JSON.parse keeps the last, where a proxy
 * or a WAF may read the first: the two would not agree on the username (RFC 8259 §4 leaves duplicates undefined; RFC
 * 6749 §3.2 refuses repeated parameters, as the form parser does). Names are compared decoded (`"\u0061"` is `"a"`).
 */
export function repeatsAName(text: string): boolean {
  // One entry per open container: the names of an object so far, or undefined for an array.
  const open: (Set<string> | undefined)[] = [];
  let expectingName = false;
  for (let index = 0; index < text.length; index += 1) {
    const code = text.charCodeAt(index);
    if (code === QUOTE) {
      const start = index;
      let escaped = false;
      for (index += 1; text.charCodeAt(index) !== QUOTE; index += 1) {
        if (text.charCodeAt(index) === BACKSLASH) {
          escaped = true;
          index += 1;
        }
      }
      const names = open.at(-1);
      if (expectingName && names !== undefined) {
        const raw = text.slice(start + 1, index);
        const name = escaped ? (JSON.parse(text.slice(start, index + 1)) as string) : raw;
        if (names.has(name)) return true;
        names.add(name);
        expectingName = false;
      }
    } else if (code === OPEN_OBJECT) {
      open.push(new Set());
      expectingName = true;
    } else if (code === OPEN_ARRAY) {
      open.push(undefined);
      expectingName = false;
    } else if (code === CLOSE_OBJECT || code === CLOSE_ARRAY) {
      open.pop();
      expectingName = false;
    } else if (code === COMMA) {
      expectingName = open.at(-1) !== undefined;
    }
  }
  return false;
}

const PERCENT_ENCODED_RUN = /(?:%[0-9A-Fa-f]{2})+/g;

/**
 * Form bodies (the token endpoint's, RFC 6749 §4.3.2) under the same rule: their bytes, and the bytes their percent
 * escapes stand for, must be UTF-8 (WHATWG's application/x-www-form-urlencoded). @fastify/formbody hands its parser
 * the body already decoded with replacement, and fast-querystring keeps an escape it cannot decode as its literal
 * text; so the bytes are checked here, then parsed by fast-querystring as the plugin did.
 */
export function registerFormParser(app: FastifyInstance): void {
  app.addContentTypeParser(
    'application/x-www-form-urlencoded',
    { parseAs: 'buffer' },
    (_request, body, done) => {
      const bytes = body as Buffer;
      if (!isUtf8(bytes)) {
        done(notUtf8(), undefined);
        return;
      }
      const text = bytes.toString('utf8');
      if (text.includes('%')) {
        for (const [run] of text.matchAll(PERCENT_ENCODED_RUN)) {
          if (!isUtf8(Buffer.from(run.replaceAll('%', ''), 'hex'))) {
            done(notUtf8(), undefined);
            return;
          }
        }
      }
      done(null, withoutEmptyCopies(parseQueryString(text)));
    },
  );
}

/**
 * RFC 6749 §3.2: a parameter sent without a value is treated as omitted, so the empty copies of a repeated one repeat
 * nothing (the seed logs `scope=&scope=&…` in); the parameter is empty when every copy is.
 */
function withoutEmptyCopies(fields: Record<string, unknown>): Record<string, unknown> {
  for (const [name, value] of Object.entries(fields)) {
    if (!Array.isArray(value)) continue;
    const given = value.filter((copy) => copy !== '');
    if (given.length <= 1) fields[name] = given[0] ?? '';
  }
  return fields;
}

const MULTIPART = 'multipart/form-data';
// More parts than any grant has parameters is no login form.
const MAX_MULTIPART_PARTS = 32;
// No parameter of a grant has a longer name.
const MAX_MULTIPART_NAME_LENGTH = 100;

const IDENTITY_TRANSFER_ENCODINGS = new Set(['7bit', '8bit', 'binary']);
// Busboy's own reading of header parameters (quoted strings, RFC 2231 forms): the check below must see the boundary
// and the charsets that busboy goes by, not what a regular expression finds inside a quoted parameter.
const parseParams = createRequire(import.meta.url)('@fastify/busboy/lib/utils/parseParams.js') as (
  value: string,
) => (string | [name: string, value: string])[];

const parametersOf = (value: string): [string, string][] =>
  parseParams(value).filter((entry): entry is [string, string] => Array.isArray(entry));

/**
 * Returns the charset a part's headers name when it is not UTF-8, or undefined. Busboy would decode such a part in
 * that charset: a UTF-8 password labelled Latin-1 would be read as other characters, and fail as a wrong password.
 * Every charset of every Content-Type line is checked (busboy goes by the first), folded lines joined as busboy joins
 * them.
 */
function partInOtherCharset(text: string, contentType: string): string | undefined {
  const boundary = parametersOf(contentType).find(([name]) => name.toLowerCase() === 'boundary')?.[1];
  if (!boundary) return undefined;
  for (const part of text.split(`--${boundary}`)) {
    const headersEnd = part.indexOf('\r\n\r\n');
    const headers = (headersEnd < 0 ? part : part.slice(0, headersEnd)).replace(/\r\n(?=[ \t])/g, '');
    for (const line of headers.split('\r\n')) {
      const colon = line.indexOf(':');
      if (colon <= 0 || line.slice(0, colon).toLowerCase() !== 'content-type') continue;
      for (const [name, value] of parametersOf(line.slice(colon + 1))) {
        if (name.toLowerCase() === 'charset' && !/^utf-?8$/i.test(value)) return value;
      }
    }
  }
  return undefined;
}

/** How many times the body holds its boundary's delimiter (`--` and the boundary), in one pass over its bytes. */
export function countDelimiters(body: Buffer, contentType: string): number {
  const boundary = parametersOf(contentType).find(([name]) => name.toLowerCase() === 'boundary')?.[1];
  if (!boundary) return 0;
  const delimiter = Buffer.from(`--${boundary}`);
  let count = 0;
  for (let at = body.indexOf(delimiter); at !== -1; at = body.indexOf(delimiter, at + delimiter.length))
    count += 1;
  return count;
}

const acceptsMultipart = (request: FastifyRequest): boolean => {
  const body = request.routeOptions.schema?.body as { content?: Record<string, unknown> } | undefined;
  return body?.content?.[MULTIPART] !== undefined;
};

/**
 * multipart/form-data bodies, which FastAPI reads for Form fields as it reads urlencoded ones (`curl -F` sends them):
 * only on a route whose body schema names the type, text fields only, each name once, all of it UTF-8. Elsewhere the
 * type stays unsupported (415), as it was before this parser.
 */
export function registerMultipartParser(app: FastifyInstance): void {
  app.addContentTypeParser(MULTIPART, { parseAs: 'buffer' }, (request, body, done) => {
    if (!acceptsMultipart(request)) {
      done(new AppError('unsupported_media_type', 'Unsupported Media Type'), undefined);
      return;
    }
    const bytes = body as Buffer;
    // A text field's bytes must be UTF-8, as in a form; file parts are refused below, so the whole body must be.
    if (!isUtf8(bytes)) {
      done(notUtf8(), undefined);
      return;
    }
    const refuse = (message: string) => malformed(message, 'GATEHOUSE_MULTIPART_INVALID');
    const contentType = request.headers['content-type'] ?? '';
    // Counted before busboy reads them: 1,790 empty parts in 16 KB were each read, 20 ms of the event loop, before
    // any was refused (found from outside). A delimiter closes the body, so it counts one more than the parts.
    if (countDelimiters(bytes, contentType) > MAX_MULTIPART_PARTS + 1) {
      done(refuse(`A multipart body holds at most ${MAX_MULTIPART_PARTS} parts`), undefined);
      return;
    }
    const otherCharset = partInOtherCharset(bytes.toString('utf8'), contentType);
    if (otherCharset) {
      done(refuse(`A multipart part names the charset ${otherCharset}: send UTF-8`), undefined);
      return;
    }
    // Null-prototype, as fast-querystring's: a field named __proto__ is a field, as in a form.
    const fields: Record<string, string> = Object.create(null);
    let problem: Error | undefined;
    let settled = false;
    const settle = (error: Error | undefined) => {
      if (settled) return;
      settled = true;
      if (error) done(error, undefined);
      else done(null, fields);
    };
    let parser: BusboyInstance;
    try {
      parser = Busboy({
        headers: request.headers as BusboyHeaders,
        limits: { parts: MAX_MULTIPART_PARTS, fieldSize: bytes.length },
      });
    } catch (error) {
      done(refuse(`The multipart body cannot be read: ${(error as Error).message}`), undefined);
      return;
    }
    // Busboy calls these outside this function's stack: a throw in one would end the process, so none may throw.
    parser.on('field', (name: unknown, value, nameTruncated, valueTruncated, transferEncoding: unknown) => {
      // A part without a name (RFC 7578 §4.2 requires one) comes with none at all.
      if (typeof name !== 'string' || name === '') problem ??= refuse('A multipart part has no field name');
      // This busboy never reports a name as truncated, so the name's limit is checked here.
      else if (nameTruncated || valueTruncated || name.length > MAX_MULTIPART_NAME_LENGTH)
        problem ??= refuse('A multipart field is too long');
      // RFC 7578 §4.7: senders do not encode parts; a quoted-printable or base64 field would be read undecoded.
      else if (
        typeof transferEncoding !== 'string' ||
        !IDENTITY_TRANSFER_ENCODINGS.has(transferEncoding.toLowerCase())
      )
        problem ??= refuse('A multipart part has a transfer encoding: send it as it is');
      // RFC 6749 §3.2: an empty copy is an omitted parameter, and repeats nothing.
      else if (Object.hasOwn(fields, name) && value !== '' && fields[name] !== '')
        problem ??= refuse(`The parameter ${name} is given twice`);
      else if (value !== '' || !Object.hasOwn(fields, name)) fields[name] = value;
    });
    parser.on('file', (_name, stream) => {
      // A file part cut short errs on its own stream: unheard, that error would end the process.
      stream.on('error', () => {});
      stream.resume();
      problem ??= refuse('Files are not accepted here: send text fields');
    });
    parser.on('partsLimit', () => {
      problem ??= refuse(`A multipart body holds at most ${MAX_MULTIPART_PARTS} parts`);
    });
    parser.on('error', (error: unknown) => {
      settle(problem ?? refuse(`The multipart body cannot be read: ${(error as Error).message}`));
    });
    parser.on('finish', () => settle(problem));
    parser.end(bytes);
  });
}
