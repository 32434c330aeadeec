import cors, { type FastifyCorsOptions } from '@fastify/cors';
import type { FastifyInstance, FastifyRequest } from 'fastify';

type CorsPolicy = Omit<FastifyCorsOptions, 'delegator' | 'hook'>;

const REFUSED: CorsPolicy = { origin: false };

/**
 * Lets pages from the listed origins call the API from a browser and read the answers: Bearer tokens only (no
 * cookies, so no credentials), Authorization and Content-Type as request headers. Any other origin, and any request
 * without an Origin, is answered as if CORS did not exist, preflights included.
 */
export async function registerCors(app: FastifyInstance, origins: readonly string[]): Promise<void> {
  const allowed = new Set(origins);
  const policyFor = (origin: string): CorsPolicy => ({
    origin,
    credentials: false,
    methods: ['GET', 'POST', 'PATCH', 'DELETE'],
    allowedHeaders: ['Authorization', 'Content-Type'],
    // What a client needs to act on an answer: the challenge of a 401, the wait of a 429 or 503, the id to report.
    exposedHeaders: ['WWW-Authenticate', 'Retry-After', 'X-Request-Id'],
    maxAge: 600,
  });
  const isPlainOptions = (request: FastifyRequest) =>
    request.method === 'OPTIONS' && request.headers['access-control-request-method'] === undefined;
  await app.register(cors, {
    delegator: (request, callback) => {
      const origin = request.headers.origin;
      // An OPTIONS request that is no preflight goes on to routing (405 with Allow), as without CORS.
      if (origin === undefined || !allowed.has(origin) || isPlainOptions(request)) callback(null, REFUSED);
      else callback(null, policyFor(origin));
    },
  });
}
