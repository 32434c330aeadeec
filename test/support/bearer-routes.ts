import type { FastifyInstance } from 'fastify';

export interface Route {
  method: string;
  /** As the OpenAPI document writes it: `/users/me/sessions/{id}`. */
  path: string;
}

const METHODS = ['get', 'post', 'put', 'patch', 'delete'];

/**
 * Every documented route that challenges a request without a token with a Bearer 401: found by what the routes do,
 * not by what they declare, so that a route added later is walked without anyone listing it.
 */
export async function discoverBearerRoutes(app: FastifyInstance): Promise<Route[]> {
  const document = (await app.inject({ method: 'GET', url: '/openapi.json' })).json() as {
    paths: Record<string, Record<string, unknown>>;
  };
  const routes: Route[] = [];
  for (const [path, operations] of Object.entries(document.paths)) {
    for (const method of Object.keys(operations).filter((name) => METHODS.includes(name))) {
      const response = await app.inject({
        method: method.toUpperCase() as 'GET',
        url: path.replace(/\{[^}]+\}/g, 'x'),
      });
      if (response.statusCode === 401 && response.headers['www-authenticate'] === 'Bearer') {
        routes.push({ method: method.toUpperCase(), path });
      }
    }
  }
  return routes;
}

export const routeName = (route: Route) => `${route.method} ${route.path}`;
