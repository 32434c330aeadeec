import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';

export const jwksRoutes: FastifyPluginAsyncTypebox<{
  publicJwks: () => Promise<Record<string, unknown>[]>;
}> = async (app, { publicJwks }) => {
  app.get(
    '/.well-known/jwks.json',
    { schema: { summary: 'Public keys that verify access tokens (RFC 7517)', tags: ['tokens'] } },
    async (_request, reply) => {
      // Short enough that verifiers pick up a rotated key well before old tokens expire.
      reply.header('cache-control', 'public, max-age=300');
      return { keys: await publicJwks() };
    },
  );
};
