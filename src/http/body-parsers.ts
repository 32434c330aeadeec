import { isUtf8 } from 'node:buffer';
import { parse as parseQueryString } from 'fast-querystring';
import type { FastifyInstance } from 'fastify';

// Read as the error table's malformed body: 422 json_invalid, or 400 invalid_request on the token endpoint.
const notUtf8 = () =>
  Object.assign(new Error('The request body is not UTF-8'), {
    statusCode: 400,
    code: 'GATEHOUSE_BODY_NOT_UTF8',
  });

/**
 * JSON bodies must be UTF-8 (RFC 8259 §8.1). Fastify decodes them with a replacing decoder, which turns every stray
 * byte into U+FFFD: a password sent in Latin-1 was stored with U+FFFD in it, and any other stray byte in its place
 * logged in too. Such a body is refused instead; the rest is Fastify's own parser (prototype poisoning refused).
 */
export function registerJsonParser(app: FastifyInstance): void {
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (request, body, done) => {
    if (!isUtf8(body as Buffer)) {
      done(notUtf8(), undefined);
      return;
    }
    parseJson(request, (body as Buffer).toString('utf8'), done);
  });
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
      done(null, parseQueryString(text));
    },
  );
}
