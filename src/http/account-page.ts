import { existsSync } from 'node:fs';
import path from 'node:path';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance } from 'fastify';
import { documentationErrorHandler } from './error-handler.ts';
import { useContentSecurityPolicy } from './security-headers.ts';

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

const NOT_BUILT =
  'The account page is not built. Run `npm run build:web` (npm ci runs it when the dev dependencies are installed), then restart the server.\n';

/**
 * Serves the account page's build at `/` under its own content security policy; without a build, `/` says how to
 * make one. Only the files present at start are routes: anything else stays the API's 404.
 */
export async function registerAccountPage(
  app: FastifyInstance,
  directory: string = ACCOUNT_PAGE_DIRECTORY,
): Promise<void> {
  await app.register(async (page) => {
    page.setErrorHandler(documentationErrorHandler);
    useContentSecurityPolicy(page, PAGE_POLICY);
    if (!existsSync(path.join(directory, 'index.html'))) {
      app.log.warn({ directory }, 'the account page is not built: run npm run build:web');
      page.get('/', { schema: { hide: true } }, async (_request, reply) =>
        reply.code(503).type('text/plain; charset=utf-8').send(NOT_BUILT),
      );
      return;
    }
    page.addHook('onSend', async (request, reply) => {
      if (reply.statusCode !== 200 && reply.statusCode !== 304) return;
      reply.header('cache-control', request.url.startsWith('/assets/') ? IMMUTABLE : REVALIDATE);
    });
    await page.register(fastifyStatic, {
      root: directory,
      prefix: '/',
      wildcard: false,
      index: ['index.html'],
      cacheControl: false,
      decorateReply: false,
      schemaHide: true,
    });
  });
}
