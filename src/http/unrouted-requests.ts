import { randomUUID } from 'node:crypto';
import { type IncomingMessage, type Server, type ServerResponse, STATUS_CODES } from 'node:http';
import { isIPv6, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AppError } from '../errors.ts';
import { type ErrorStyle, renderError, sendError, toAppError } from './error-handler.ts';
import {
  closeAfterAnswer,
  markBodyHeldBack,
  STANDARD_HEADERS,
  setStandardHeaders,
  wasAnsweredBeforeItsBody,
} from './response-hooks.ts';
import { SECURITY_HEADERS } from './security-headers.ts';

// Requests that no route answers: what Node's parser refuses, what Fastify refuses before routing, and paths that
// match no route (or not under this method). Each is answered in the error table's shape with the standard headers.

const CLIENT_ERRORS: Record<string, () => AppError> = {
  HPE_HEADER_OVERFLOW: () => new AppError('headers_too_large', 'Request header fields too large'),
  ERR_HTTP_REQUEST_TIMEOUT: () => new AppError('request_timeout', 'Request timeout'),
  ERR_HTTP_REQUEST_TIMEOUT_HEADERS: () => new AppError('request_timeout', 'Request timeout'),
};

// RFC 9112 §3: method SP request-target SP HTTP-version, the method a token.
const REQUEST_LINE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [^\s]+ HTTP\/(\d)\.\d\r?\n/;
// A method as Node's parser knows them (upper case), then the start of an origin, absolute or asterisk form: a header
// value's bytes rarely look like it.
const REQUEST_LINE_START = /^[A-Z]+ ((?:\/|https?:\/\/|\*)\S*)/;

/** The limits on a request's target and on its header section, each told by its own status (414, 431). */
export const MAX_TARGET_BYTES = 16_384;
const MAX_HEADER_SECTION_BYTES = 16_384;
/**
 * The parser's limit on the request line and headers together (app.ts gives it to Node), past both of the above: the
 * parser cannot tell which of the two ran over, and it reads what has arrived, not the request from its start.
 */
export const MAX_HEADER_BYTES = MAX_TARGET_BYTES + MAX_HEADER_SECTION_BYTES;

type ParserError = Error & { code?: string; rawPacket?: unknown };

const versionNotSupported = () =>
  new AppError('http_version_not_supported', 'HTTP version not supported: this server speaks HTTP/1.1');

/**
 * The refusal a parser error gets: what Node's parser reports by its codes alone (400 for all but a few) is refined
 * from the bytes it refused, when they hold the start of the request. Undefined for bytes after a request that asked to
 * close the connection: they are no request to answer (RFC 9112 §9.6).
 */
function refusalOf(error: ParserError, packet: string): AppError | undefined {
  if (error.code === 'HPE_CLOSED_CONNECTION') return undefined;
  // llhttp counts the request line into the header limit: a line that alone reaches it is a target too long.
  if (error.code === 'HPE_HEADER_OVERFLOW' && REQUEST_LINE_START.test(packet)) {
    const lineEnd = packet.indexOf('\n');
    if (lineEnd === -1 || lineEnd > MAX_TARGET_BYTES) return new AppError('uri_too_long', 'URI too long');
  }
  const line = REQUEST_LINE.exec(packet);
  if (line && error.code === 'HPE_INVALID_METHOD')
    return new AppError('not_implemented', 'Not implemented: unknown method');
  if (line && error.code === 'HPE_INVALID_VERSION' && line[1] !== '1') return versionNotSupported();
  return CLIENT_ERRORS[error.code ?? '']?.() ?? new AppError('malformed_request', 'Bad request');
}

/** The answer a socket is writing or about to write for a request received in full, if one is not finished. */
function answerInFlight(socket: Duplex): ServerResponse | undefined {
  // Node's own field: the response that holds the socket (the next pipelined one takes it when this one finishes).
  const response = (socket as { _httpMessage?: ServerResponse | null })._httpMessage;
  return response && !response.writableFinished && response.req.complete ? response : undefined;
}

/**
 * Answers what Node's HTTP parser refuses before any route runs (malformed request line or chunking, headers too
 * large, a request that did not arrive in time) from the error table, with the standard headers, and closes; in the
 * OAuth shape when the refused request was for a route that answers in it (RFC 6749 §5.2 on /token). Bytes refused
 * after whole requests wait for those requests' answers (RFC 9112 §9.3.2: responses go in the order of their
 * requests): the 400 was written at once and the connection destroyed, so a request that had run lost its answer.
 */
export function createClientErrorAnswers(): {
  answerClientError: (error: ParserError, socket: Duplex) => void;
  /** Notes the paths of the routes registered after it that answer in the OAuth shape. */
  noteOAuthRoutes: (app: FastifyInstance) => void;
} {
  const oauthPaths = new Set<string>();
  const styleOf = (packet: string): ErrorStyle => {
    const target = REQUEST_LINE_START.exec(packet)?.[1];
    return target !== undefined && oauthPaths.has(pathOfTarget(target)) ? 'oauth' : 'fastapi';
  };

  const answerClientError = (error: ParserError, socket: Duplex): void => {
    if (!socket.writable || error.code === 'ECONNRESET') {
      socket.destroy();
      return;
    }
    // Before the early-answer rule: a later request answered before its body must not cost an earlier one its answer.
    if (answerInFlight(socket)) {
      if (answeringAfterInFlight.has(socket)) return;
      answeringAfterInFlight.add(socket);
      // Where the refused request begins in the bytes is not known: its line is not read.
      const refusal = refusalOf(error, '');
      afterAnswersInFlight(socket, () => {
        if (refusal && socket.writable && !wasAnsweredBeforeItsBody(socket))
          socket.write(rawAnswer(refusal, 'fastapi', ''));
        // After what was written drains: the answers in flight may still be on their way out.
        (socket as Socket).destroySoon();
      });
      return;
    }
    if (wasAnsweredBeforeItsBody(socket)) {
      socket.destroy();
      return;
    }
    // No request in flight: the refused bytes begin with the refused request, though not always all of its line.
    const packet = Buffer.isBuffer(error.rawPacket) ? error.rawPacket.toString('latin1') : '';
    const refusal = refusalOf(error, packet);
    // As Node and Fastify do: write, then destroy, so that a client still sending cannot hold the connection open.
    if (refusal) socket.write(rawAnswer(refusal, styleOf(packet), packet));
    socket.destroy();
  };

  const noteOAuthRoutes = (app: FastifyInstance) => {
    app.addHook('onRoute', (route) => {
      if ((route.config as { errorStyle?: ErrorStyle } | undefined)?.errorStyle === 'oauth')
        oauthPaths.add(route.url);
    });
  };

  return { answerClientError, noteOAuthRoutes };
}

/** Runs `then` once the socket has written every answer to a request received in full before (RFC 9112 §9.3.2). */
function afterAnswersInFlight(socket: Duplex, then: () => void): void {
  const response = answerInFlight(socket);
  if (!response) {
    then();
    return;
  }
  // Node hands the socket to the next pipelined answer when this one finishes: look again after that.
  response.once('finish', () => setImmediate(() => afterAnswersInFlight(socket, then)));
  response.once('close', () => {
    if (!response.writableFinished) socket.destroy();
  });
}

/** Sockets whose refused bytes wait for the answers in flight: the parser reports each further chunk again. */
const answeringAfterInFlight = new WeakSet<Duplex>();

// Requests whose Expect names something besides 100-continue: refused 417 by the request rules below.
const unmetExpectations = new WeakSet<object>();

/** The members of an Expect list, empty elements dropped (RFC 9110 §5.6.1.2), in lower case. */
function expectations(value: string | undefined): string[] {
  return (value ?? '')
    .split(',')
    .map((member) => member.trim().toLowerCase())
    .filter((member) => member !== '');
}

/**
 * Node's `checkExpectation` and `checkContinue` events: Node answered any Expect but 100-continue itself with a bare
 * 417, around everything else (a request pipelined after it was then served, its answer never sent), and sent the 100
 * to every request that named 100-continue, beside anything else too, and however large its announced body. Here
 * both requests go on as requests: one expecting something else than 100-continue (RFC 9110 §10.1.1) is refused 417
 * in the error table's shape by the request rules, and the connection closed, since the client may hold back a body;
 * one expecting 100-continue alone gets the 100 unless its Content-Length is past the body limit, which the route
 * then refuses (413) before reading any body. An empty Expect expects nothing.
 */
export function routeExpectations(server: Server, bodyLimitBytes: number) {
  return (request: IncomingMessage, response: ServerResponse): void => {
    const members = expectations(request.headers.expect);
    if (members.some((member) => member !== '100-continue')) unmetExpectations.add(request);
    else if (members.length > 0 && request.httpVersionMinor >= 1) {
      if (Number(request.headers['content-length']) > bodyLimitBytes) markBodyHeldBack(request);
      else response.writeContinue();
    }
    server.emit('request', request, response);
  };
}

/**
 * Node's `connect` event: a CONNECT request (RFC 9110 §9.3.6) asks for a tunnel, which only a proxy opens. Without a
 * listener Node closed the connection with no answer at all; it gets a 400 in the error table's shape, and closes.
 */
export function answerConnect(_request: IncomingMessage, socket: Duplex): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  socket.on('error', () => {});
  // A CONNECT pipelined after other requests: their answers first (it had cost them theirs, found from outside).
  afterAnswersInFlight(socket, () => {
    if (!socket.writable) return;
    socket.end(
      rawAnswer(
        new AppError('malformed_request', 'Bad request: CONNECT is for proxies, and this is not one'),
        'fastapi',
        '',
      ),
    );
  });
}

/** An early answer written straight to a socket that no ServerResponse holds. */
function rawAnswer(error: AppError, style: ErrorStyle, packet: string): string {
  const rendered = renderError(error, style);
  const { body, headers } = earlyAnswer(rendered.body);
  const status = rendered.status;
  // RFC 9110 §6.6.1: an origin server MUST send Date in a 4xx or 5xx, as Node does in the answers it writes itself.
  const head = Object.entries({ ...headers, date: new Date().toUTCString() })
    .map(([name, value]) => `${name}: ${value}`)
    .join('\r\n');
  // §9.3.2: no content in an answer to HEAD, its Content-Length still that of a GET's.
  const content = packet.startsWith('HEAD ') ? '' : body;
  return `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\n${head}\r\n\r\n${content}`;
}

function earlyAnswer(answer: object): { body: string; headers: Record<string, string> } {
  const body = JSON.stringify(answer);
  return {
    body,
    headers: {
      'content-type': 'application/json; charset=utf-8',
      'content-length': String(Buffer.byteLength(body)),
      'x-request-id': randomUUID(),
      ...SECURITY_HEADERS,
      ...STANDARD_HEADERS,
      // RFC 6749 §5.1 asks it of the token endpoint's answers, and the path of a refused request is not always known.
      pragma: 'no-cache',
      connection: 'close',
    },
  };
}

// RFC 9112 §3.2 and RFC 3986 §3.2.2-3.2.3: uri-host [":" port], the host an IP literal in brackets (an IPv6 address,
// without a zone, or an IPvFuture) or a reg-name (unreserved, percent-encoded and sub-delims characters; an IPv4
// address is one too).
const HOST_FIELD = /^(?:\[([^\]]*)\]|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)(?::(\d{0,5}))?$/;
const IP_FUTURE = /^v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+$/;

function isValidHostField(host: string): boolean {
  const match = HOST_FIELD.exec(host);
  if (match === null) return false;
  const [, literal, port] = match;
  if (literal !== undefined && !IP_FUTURE.test(literal) && (literal.includes('%') || !isIPv6(literal)))
    return false;
  return port === undefined || port === '' || Number(port) <= 65535;
}

/** Node keeps the first of repeated Host lines; the raw headers still hold them all. */
function hasRepeatedHost(rawHeaders: string[]): boolean {
  let seen = false;
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i]?.length === 4 && rawHeaders[i]?.toLowerCase() === 'host') {
      if (seen) return true;
      seen = true;
    }
  }
  return false;
}

/**
 * RFC 9112 §3.2: an HTTP/1.1 request without Host, with more than one Host line or with an invalid Host is refused
 * with 400. Node's own check (off in app.ts) would answer it bare; here it goes through the error table. §3.2.4: the
 * asterisk form (`GET * HTTP/1.1`) belongs to a server-wide OPTIONS only, and Fastify routed any other method's to
 * `/`. §6.1: a transfer coding other than chunked is answered 501. One of the first onRequest hooks: nothing else runs
 * for these.
 */
export function registerRequestTargetRules(app: FastifyInstance, unrouted: UnroutedAnswer): void {
  // No route takes QUERY, and Fastify refuses one without a Content-Type (RFC 10008) before any handler runs, as a
  // body error: it gets what any method no route takes gets.
  const queryError = (request: FastifyRequest, reply: FastifyReply) =>
    request.method === 'QUERY' ? unrouted(request, reply) : undefined;
  app.addHook('onRequest', (request, reply, done) => {
    const sizeRefusal = refusalOfSize(request.raw);
    if (sizeRefusal) {
      closeAfterAnswer(reply);
      done(sizeRefusal);
      return;
    }
    // RFC 9110 §4.2.4: userinfo in an http(s) URI is to be treated as an error (it is a credential, and gets logged).
    if (ABSOLUTE_FORM.exec(request.raw.url ?? '')?.[0].includes('@')) {
      closeAfterAnswer(reply);
      done(
        new AppError('malformed_request', 'Bad request: the request target must not carry user information'),
      );
      return;
    }
    if (request.raw.url === '*' && request.method !== 'OPTIONS') {
      closeAfterAnswer(reply);
      done(new AppError('malformed_request', 'Bad request: the request target * is only for OPTIONS'));
      return;
    }
    if (unmetExpectations.has(request.raw)) {
      closeAfterAnswer(reply);
      done(new AppError('expectation_failed', 'Expectation failed: only 100-continue is supported'));
      return;
    }
    const codings = request.raw.headers['transfer-encoding'];
    // §6.1: HTTP/1.0 has no transfer codings; the message's framing is faulty, whatever it says.
    if (codings !== undefined && request.raw.httpVersionMinor === 0) {
      closeAfterAnswer(reply);
      done(new AppError('malformed_request', 'Bad request: HTTP/1.0 has no Transfer-Encoding'));
      return;
    }
    if (codings !== undefined && !isChunkedAlone(codings)) {
      closeAfterAnswer(reply);
      // RFC 9112 §6.3: without chunked last, the body's length cannot be known, which MUST be a 400; with it, another
      // coding is one this server does not understand (§6.1, 501).
      done(
        endsWithChunked(codings)
          ? new AppError(
              'not_implemented',
              'Not implemented: chunked is the only transfer coding this server reads',
            )
          : new AppError('malformed_request', 'Bad request: chunked must be the last transfer coding'),
      );
      return;
    }
    const host = request.raw.headers.host;
    if (host === undefined) {
      if (request.raw.httpVersion !== '1.1') {
        if (request.raw.url === '*') return answerServerOptions(reply);
        done(queryError(request, reply));
        return;
      }
      closeAfterAnswer(reply);
      done(new AppError('malformed_request', 'A Host header is required'));
      return;
    }
    if (isValidHostField(host) && !hasRepeatedHost(request.raw.rawHeaders)) {
      if (request.raw.url === '*') return answerServerOptions(reply);
      done(queryError(request, reply));
      return;
    }
    closeAfterAnswer(reply);
    done(new AppError('malformed_request', 'Bad request: invalid or repeated Host header'));
  });
}

/**
 * RFC 9112 §3: a target longer than the server parses MUST get 414, and a header section too large 431 (RFC 6585 §5);
 * RFC 9110 §15.6.6: a major version other than 1, which Node's parser reads (HTTP/2.0, HTTP/0.9), gets 505.
 */
function refusalOfSize(raw: IncomingMessage): AppError | undefined {
  if (raw.httpVersionMajor !== 1) return versionNotSupported();
  if ((raw.url?.length ?? 0) > MAX_TARGET_BYTES) return new AppError('uri_too_long', 'URI too long');
  let headerBytes = 0;
  const fields = raw.rawHeaders;
  // Each field as it came: name, ": ", value, CRLF.
  for (let i = 0; i < fields.length; i += 1) headerBytes += (fields[i]?.length ?? 0) + 2;
  return headerBytes > MAX_HEADER_SECTION_BYTES
    ? new AppError('headers_too_large', 'Request header fields too large')
    : undefined;
}

// Every method some route of this server takes.
const SERVER_METHODS = 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS';

/** RFC 9110 §9.3.7: `OPTIONS *` asks about the server in general (a ping, or its methods); no route took it (404). */
function answerServerOptions(reply: FastifyReply): void {
  reply.code(204).header('allow', SERVER_METHODS).send();
}

/**
 * RFC 9112 §6.1: a transfer coding the server does not understand SHOULD be answered 501. Node's parser refuses a
 * chunked that is not the last coding, but reads `gzip, chunked` as chunked and would hand on a body still gzipped.
 */
const isChunkedAlone = (codings: string) => codings.trim().toLowerCase() === 'chunked';
const endsWithChunked = (codings: string) => codings.split(',').at(-1)?.trim().toLowerCase() === 'chunked';

// RFC 9112 §3.2.2's absolute form, whose scheme and authority the router drops before matching.
const ABSOLUTE_FORM = /^https?:\/\/[^/?#]+/i;

/**
 * The request's path as a rule keyed on paths must see it: without the scheme and authority of an absolute-form target
 * (`POST http://host/token` reaches /token), without the query, and percent-encoded characters decoded once, since the
 * router decodes them before matching (`/%74oken` reaches /token). Not the matched route's pattern: the CORS
 * preflight route matches every path, and 404 and 405 answers match none.
 */
export function routedPath(request: FastifyRequest): string {
  return pathOfTarget(request.url);
}

/** A request target's path as routedPath gives it, from the target as the request line has it. */
function pathOfTarget(target: string): string {
  const authority = target.startsWith('/') ? undefined : ABSOLUTE_FORM.exec(target);
  const url = authority ? `/${target.slice(authority[0].length).replace(/^\//, '')}` : target;
  const end = url.search(/[?#]/);
  const path = end === -1 ? url : url.slice(0, end);
  if (!path.includes('%')) return path;
  try {
    return decodeURI(path);
  } catch {
    return path;
  }
}

/** The error for a request no route takes (405 with Allow set on the reply, or 404). */
export type UnroutedAnswer = (request: FastifyRequest, reply: FastifyReply) => AppError;

const refusedRoutes = new WeakMap<FastifyRequest, string>();

/** The pattern of the route whose path a request answered 405 had (metrics label it so), else undefined. */
export function routeRefusingMethod(request: FastifyRequest): string | undefined {
  return refusedRoutes.get(request);
}

/** Answers 405 with Allow for a path that exists under other methods, 404 otherwise; returns that answer. */
export function registerMethodNotAllowed(app: FastifyInstance): UnroutedAnswer {
  // `wildcard`: a route whose last part takes any path (the documentation's files), which no slash twin is meant for.
  const routes: { pattern: RegExp; method: string; wildcard: boolean; url: string }[] = [];
  app.addHook('onRoute', (route) => {
    // A plugin's `/` route is served at its prefix with and without the slash, but announced here by the first alone
    // (`/docs/` answered 405 with Allow: HEAD, its HEAD route being announced apart).
    const prefix = (route as { prefix?: string }).prefix;
    const routePath = (route as { routePath?: string }).routePath;
    const urls = prefix && (routePath === '' || routePath === '/') ? [prefix, `${prefix}/`] : [route.url];
    for (const url of urls) {
      const source = url
        .split('/')
        .map((part) =>
          part.startsWith(':') ? '[^/]+' : part === '*' ? '.*' : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'),
        )
        .join('/');
      for (const method of [route.method].flat()) {
        // The CORS preflight route answers OPTIONS on every path; it is no method of any resource.
        if (method !== 'OPTIONS')
          routes.push({ pattern: new RegExp(`^${source}$`), method, wildcard: url.endsWith('*'), url });
      }
    }
  });
  const unrouted: UnroutedAnswer = (request, reply) => {
    const path = routedPath(request);
    const matching = routes.filter((route) => route.pattern.test(path));
    const allowed = [...new Set(matching.map((route) => route.method))];
    // A wildcard route (the documentation assets) that declines a path under its own method: a missing file.
    if (allowed.length > 0 && !allowed.includes(request.method)) {
      refusedRoutes.set(request, (matching[0] as { url: string }).url);
      reply.header('allow', allowed.join(', '));
      return new AppError('method_not_allowed', 'Method Not Allowed');
    }
    return new AppError('not_found', 'Not Found');
  };
  /**
   * The target with its path's trailing slash added or removed, when a route takes that path under this method: the
   * seed (Starlette's redirect_slashes) answers 307 there, and its clients follow. Only an origin-form target, and never
   * one whose path begins `//`, which a Location would send to another host.
   */
  const slashTwin = (request: FastifyRequest): string | undefined => {
    const target = request.url;
    if (!target.startsWith('/') || target.startsWith('//')) return undefined;
    const queryAt = target.indexOf('?');
    const path = queryAt === -1 ? target : target.slice(0, queryAt);
    if (path === '/') return undefined;
    const twin = path.endsWith('/') ? path.slice(0, -1) : `${path}/`;
    const twinPath = pathOfTarget(twin);
    const takes = (route: (typeof routes)[number]) =>
      !route.wildcard && route.method === request.method && route.pattern.test(twinPath);
    if (!routes.some(takes)) return undefined;
    return queryAt === -1 ? twin : twin + target.slice(queryAt);
  };
  app.setNotFoundHandler(async (request, reply) => {
    const twin = slashTwin(request);
    if (twin !== undefined) return reply.code(307).header('location', twin).send();
    return sendError(unrouted(request, reply), request, reply);
  });
  return unrouted;
}

/** Fastify's `frameworkErrors`: errors raised before routing (an undecodable path) go through the one error table. */
export function answerFrameworkError(
  error: FastifyError,
  request: FastifyRequest,
  reply: FastifyReply,
): void {
  // No onRequest hook has run for these requests, the security headers' included.
  reply.headers(SECURITY_HEADERS);
  setStandardHeaders(request, reply);
  sendError(toAppError(error), request, reply);
}
