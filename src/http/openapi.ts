import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';

/** Registers the OpenAPI document (generated from route schemas) and Swagger UI at /docs. */
export async function registerOpenApi(app: FastifyInstance): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Gatehouse',
        version: '0.1.0',
        description:
          'Register users, exchange a password for a JWT access token, read the protected conversation.',
      },
      components: {
        securitySchemes: {
          OAuth2PasswordBearer: {
            type: 'oauth2',
            flows: { password: { tokenUrl: '/token', scopes: { conversation: 'Read your conversation' } } },
          },
        },
      },
    },
  });
  await app.register(swaggerUi, {
    routePrefix: '/docs',
    staticCSP: true,
    // Swagger UI sets element styles at run time; inline styles (never scripts) are allowed for it alone.
    transformStaticCSP: (header: string) =>
      header.replace("style-src 'self' https:", "style-src 'self' https: 'unsafe-inline'"),
    uiConfig: { persistAuthorization: false },
  });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
}
