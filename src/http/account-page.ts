import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance } from 'fastify';
import { refusalOfIfMatch } from './change-requests.ts';
import { documentationErrorHandler } from './error-handler.ts';
import { useContentSecurityPolicy } from './security-headers.ts';
import { routedPath } from './unrouted-requests.ts';

/** Where `npm run build:web` (Vite) writes the page: dist/web at the project's root. */
export const ACCOUNT_PAGE_DIRECTORY = path.resolve(import.meta.dirname, '..', '..', 'dist', 'web');

// Everything the page loads is its own: no inline script or style, no eval, nothing framed, no form posted
// elsewhere, and Trusted Types so that no string ever becomes markup or script through the DOM.
const PAGE_POLICY = {
  'default-src': ["'none'"],
  'script-src': ["'self'"],
  'script-src-attr': ["'none'"],
  'style-src': ["'self'"],
  'connect-src': ["'self'"],
  'img-src': ["'self'", 'data:'],
  'manifest-src': ["'self'"],
  'base-uri': ["'none'"],
  'form-action': ["'self'"],
  'frame-ancestors': ["'none'"],
  'object-src': ["'none'"],
  'require-trusted-types-for': ["'script'"],
  'trusted-types': ["'none'"],
};

// Vite names every file under assets/ by a hash of its content: a changed file is a new URL.
const IMMUTABLE = 'public, max-age=31536000, immutable';
const REVALIDATE = 'no-cache';

/**
 * The pages that mail links open, each at one path without `.html`. Their token rides in the URL's fragment, which
 * their script removes at once; `Referrer-Policy: no-referrer` (helmet's default, on every response) is the second
 * guard against the URL leaking.
 */
const EMAIL_PAGES = [
  { url: '/account/verify-email', file: path.join('account', 'verify-email.html') },
  { url: '/account/reset-password', file: path.join('account', 'reset-password.html') },
];

const NOT_BUILT =
  'The account page is not built. Run `npm run build:web` (npm ci runs it when the dev dependencies are installed), then restart the server.\n';

/**
 * Serves the account page's build at `/`, and the pages that mail links open at `/account/verify-email` and
 * `/account/reset-password`, under their own content security policy; without a build, each says how to make one.
 * Only the files present at start are routes: anything else stays the API's 404.
 */
export async function registerAccountPage(
  app: FastifyInstance,
  directory: string = ACCOUNT_PAGE_DIRECTORY,
): Promise<void> {
  await app.register(async (page) => {
    page.setErrorHandler(documentationErrorHandler);
    await useContentSecurityPolicy(page, PAGE_POLICY);
    if (!existsSync(path.join(directory, 'index.html'))) {
      app.log.warn({ directory }, 'the account page is not built: run npm run build:web');
      for (const url of ['/', ...EMAIL_PAGES.map((emailPage) => emailPage.url)]) {
        page.get(url, { schema: { hide: true } }, async (_request, reply) =>
          reply.code(503).type('text/plain; charset=utf-8').send(NOT_BUILT),
        );
      }
      return;
    }
    // RFC 9110 §13.1.1 compares If-Match strongly, and the page's tags are weak (@fastify/send compares weakly and let
    // the page's own weak tag through): only `*` holds.
    page.addHook('onRequest', (request, _reply, done) => done(refusalOfIfMatch(request.headers)));
    page.addHook('onSend', async (request, reply) => {
      if (reply.statusCode !== 200 && reply.statusCode !== 304) return;
      reply.header('cache-control', routedPath(request).startsWith('/assets/') ? IMMUTABLE : REVALIDATE);
    });
    for (const emailPage of EMAIL_PAGES) {
      const file = path.join(directory, emailPage.file);
      if (!existsSync(file)) {
        app.log.warn({ file }, 'an email page is missing from the build: run npm run build:web');
        continue;
      }
      const html = readFileSync(file);
      page.get(emailPage.url, { schema: { hide: true } }, async (_request, reply) =>
        reply.type('text/html; charset=utf-8').send(html),
      );
    }
    await page.register(fastifyStatic, {
      root: directory,
      prefix: '/',
      wildcard: false,
      index: ['index.html'],
      // Served above at their paths without `.html`, and only there.
      globIgnore: ['account/**'],
      cacheControl: false,
      decorateReply: false,
      schemaHide: true,
    });
  });
}
