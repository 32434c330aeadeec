import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';
import { documentationErrorHandler } from './error-handler.ts';
import { SECURITY_HEADERS, useContentSecurityPolicy } from './security-headers.ts';

const DOCUMENTATION_PREFIX = '/docs';
const DOCUMENTATION_INDEX_ALIAS = `${DOCUMENTATION_PREFIX}/static/index.html`;
const DATA_TYPE = /^application\/(json|x-yaml)/;

// Every asset is served from here. Swagger UI's own suggested policy adds upgrade-insecure-requests, which blanks the
// page on plain HTTP off localhost, and allows images from validator.swagger.io, which would learn where the
// document lives: neither is here.
const DOCUMENTATION_POLICY = {
  'default-src': ["'self'"],
  'base-uri': ["'self'"],
  'font-src': ["'self'", 'data:'],
  'form-action': ["'self'"],
  'frame-ancestors': ["'none'"],
  'img-src': ["'self'", 'data:'],
  'object-src': ["'none'"],
  'script-src': ["'self'"],
  'script-src-attr': ["'none'"],
  // Swagger UI sets element styles at run time; inline styles (never scripts) are allowed for it alone.
  'style-src': ["'self'", "'unsafe-inline'"],
};

/** Registers the OpenAPI document (generated from route schemas) and Swagger UI at /docs. */
export async function registerOpenApi(app: FastifyInstance): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Gatehouse',
        version: '0.1.0',
        description:
          'Register users, exchange a password for a JWT access token, read and add to the protected conversation. ' +
          'Routes name the scope they need; the account routes (/users/me, /logout) take any valid token of the user.',
      },
      components: {
        securitySchemes: {
          OAuth2PasswordBearer: {
            type: 'oauth2',
            flows: {
              password: {
                tokenUrl: '/token',
                // Ticking none asks for the default: both conversation scopes.
                scopes: {
                  'conversation:read': 'Read your conversation',
                  'conversation:write': 'Add messages to your conversation',
                  admin: 'Operate the service (users with the admin role only; never granted by default)',
                },
              },
            },
          },
        },
      },
    },
  });
  // Its own scope, so that only the asset server's refusals are read as a missing page, not another plugin's 4xx.
  await app.register(async (documentation) => {
    documentation.setErrorHandler(documentationErrorHandler);
    await useContentSecurityPolicy(documentation, DOCUMENTATION_POLICY);
    // The plugin's own redirect is built from req.url: with a query it pointed at itself forever, and an absolute-form
    // request target put its own host into Location. The page has one address.
    documentation.addHook('onRequest', (request, reply, done) => {
      if (request.routeOptions.url === DOCUMENTATION_INDEX_ALIAS) {
        reply.redirect(`${DOCUMENTATION_PREFIX}/`);
        return;
      }
      done();
    });
    // The OpenAPI document it also serves, as JSON and as YAML, is data, not a page: the API's headers, as
    // /openapi.json has them.
    documentation.addHook('onSend', (_request, reply, payload, done) => {
      if (DATA_TYPE.test(String(reply.getHeader('content-type') ?? ''))) reply.headers(SECURITY_HEADERS);
      done(null, payload);
    });
    await documentation.register(swaggerUi, {
      routePrefix: DOCUMENTATION_PREFIX,
      // Written into the page as Swagger UI's `validatorUrl: null`: no badge fetched from validator.swagger.io.
      validatorUrl: false,
      uiConfig: { persistAuthorization: false },
    });
  });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
}
