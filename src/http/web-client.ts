import cookie from '@fastify/cookie';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AppError } from '../errors.ts';

/**
 * The account page's requests say so with this header. A page on another origin cannot send it without a CORS
 * preflight that this server never grants it, and a form or an image cannot send it at all.
 */
export const WEB_CLIENT_HEADER = 'x-gatehouse-client';

const REFRESH_COOKIE = 'gatehouse_refresh';
const DEVICE_COOKIE = 'gatehouse_device';
// RFC 6265bis §4.1.3.2: a `__Host-` cookie must be Secure, have Path=/ and no Domain, so no sibling host (and no
// page of this host over plain HTTP) can set or shadow it.
const HOST_PREFIX = '__Host-';

export interface WebClientPolicy {
  /** The refresh cookie's Max-Age, renewed at each rotation: the session's idle lifetime. */
  refreshMaxAgeSeconds: number;
  /** The device cookie's Max-Age: the device token's own validity. */
  deviceMaxAgeSeconds: number;
}

/** The cookies of the web client: what the account page keeps instead of the refresh and device tokens. */
export interface WebClientCookies {
  /** Adds @fastify/cookie to the scope whose routes read or write these cookies, and to no other. */
  register(scope: FastifyInstance): Promise<void>;
  refreshTokenOf(request: FastifyRequest): string | undefined;
  /** A refresh cookie of either name came with the request, whoever sent it. */
  carriesRefreshCookie(request: FastifyRequest): boolean;
  deviceTokenOf(request: FastifyRequest): string | undefined;
  keepRefreshToken(request: FastifyRequest, reply: FastifyReply, token: string): void;
  keepDeviceToken(request: FastifyRequest, reply: FastifyReply, token: string): void;
  forgetRefreshToken(request: FastifyRequest, reply: FastifyReply): void;
  forgetDeviceToken(request: FastifyRequest, reply: FastifyReply): void;
}

/** The request comes from the account page (it sent the header); refuseCrossSiteWebClients has checked its origin. */
export function isWebClient(request: FastifyRequest): boolean {
  return request.headers[WEB_CLIENT_HEADER] === 'web';
}

/**
 * Browsers take Secure cookies from HTTPS and from loopback hosts (which they count as secure contexts) only: there
 * the cookies are `__Host-` prefixed and Secure. Plain HTTP on any other host (a LAN address in development) gets
 * unprefixed cookies without Secure, which the browser would otherwise drop, and reads only those: over HTTPS an
 * unprefixed cookie, which a sibling host could have planted, is never read.
 */
function cookieFlavourOf(request: FastifyRequest): { prefix: string; secure: boolean } {
  return request.protocol === 'https' || isLoopbackHost(request.hostname)
    ? { prefix: HOST_PREFIX, secure: true }
    : { prefix: '', secure: false };
}

function isLoopbackHost(hostname: string): boolean {
  const host = hostname.toLowerCase();
  return (
    host === 'localhost' ||
    host.endsWith('.localhost') ||
    host === '[::1]' ||
    /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host)
  );
}

/** Builds the cookie handling of the web client; nothing outside http/ sees a cookie. */
export function createWebClientCookies(policy: WebClientPolicy): WebClientCookies {
  let warnedOfUntrustedProxy = false;
  const flavourOf = (request: FastifyRequest) => {
    const flavour = cookieFlavourOf(request);
    // A TLS proxy that TRUST_PROXY does not name: its HTTPS is taken for plain HTTP, and the cookies lose their
    // prefix and Secure, which a sibling host could then plant. The header cannot be believed, only reported.
    if (!flavour.secure && !warnedOfUntrustedProxy && request.headers['x-forwarded-proto'] !== undefined) {
      warnedOfUntrustedProxy = true;
      request.log.warn(
        { peer: request.socket.remoteAddress },
        'X-Forwarded-Proto came from a peer TRUST_PROXY does not list: the account page cookies are set without ' +
          'Secure and the __Host- prefix. Behind a TLS proxy, list it in TRUST_PROXY',
      );
    }
    return flavour;
  };
  const read = (request: FastifyRequest, name: string) =>
    request.cookies[flavourOf(request).prefix + name] || undefined;
  const write = (
    request: FastifyRequest,
    reply: FastifyReply,
    name: string,
    value: string,
    maxAge: number,
  ) => {
    const { prefix, secure } = flavourOf(request);
    reply.setCookie(prefix + name, value, { path: '/', httpOnly: true, secure, sameSite: 'strict', maxAge });
  };
  const clear = (request: FastifyRequest, reply: FastifyReply, name: string) => {
    const { prefix, secure } = flavourOf(request);
    reply.clearCookie(prefix + name, { path: '/', httpOnly: true, secure, sameSite: 'strict' });
  };
  return {
    async register(scope) {
      await scope.register(cookie);
    },
    refreshTokenOf: (request) => read(request, REFRESH_COOKIE),
    carriesRefreshCookie: (request) =>
      Boolean(request.cookies[HOST_PREFIX + REFRESH_COOKIE] || request.cookies[REFRESH_COOKIE]),
    deviceTokenOf: (request) => read(request, DEVICE_COOKIE),
    keepRefreshToken: (request, reply, token) =>
      write(request, reply, REFRESH_COOKIE, token, policy.refreshMaxAgeSeconds),
    keepDeviceToken: (request, reply, token) =>
      write(request, reply, DEVICE_COOKIE, token, policy.deviceMaxAgeSeconds),
    forgetRefreshToken: (request, reply) => clear(request, reply, REFRESH_COOKIE),
    forgetDeviceToken: (request, reply) => clear(request, reply, DEVICE_COOKIE),
  };
}

// Browsers send no Origin on a same-origin GET, and no Sec-Fetch-Site over plain HTTP off loopback; no safe request
// reads a cookie or changes anything.
const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * The web client's CSRF rule, on every route: a request that says it is the account page and may change something
 * must come from the page's own origin. Sec-Fetch-Site, which a page cannot set, decides when the browser sent it;
 * otherwise the Origin must be this server's (scheme, host and port, as TRUST_PROXY lets the proxy say them).
 * SameSite=Strict already keeps the cookies off cross-site requests; this also covers same-site siblings (another
 * port or subdomain) and browsers without SameSite.
 */
export function refuseCrossSiteWebClients(app: FastifyInstance): void {
  // A callback hook, not an async one: it runs on every request, and an async hook costs each a promise.
  app.addHook('onRequest', (request, _reply, done) => {
    if (isWebClient(request) && !SAFE_METHODS.has(request.method) && !isSameOrigin(request)) {
      done(new AppError('cross_site_request', 'Cross-site request refused'));
      return;
    }
    done();
  });
}

function isSameOrigin(request: FastifyRequest): boolean {
  const site = request.headers['sec-fetch-site'];
  if (site !== undefined) return site === 'same-origin';
  const origin = request.headers.origin;
  if (origin === undefined || origin === 'null') return false;
  return origin === ownOrigin(request);
}

function ownOrigin(request: FastifyRequest): string | undefined {
  try {
    return new URL(`${request.protocol}://${request.host}`).origin;
  } catch {
    return undefined;
  }
}
