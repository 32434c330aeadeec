import helmet, { type FastifyHelmetOptions } from '@fastify/helmet';
import Fastify, { type FastifyInstance } from 'fastify';

type Directives = Record<string, string[]>;

// JSON is never rendered, so it may load nothing and be framed by nothing: a response opened as a page (an error
// message that echoes input, say) can run no script.
const API_POLICY: Directives = { 'default-src': ["'none'"], 'frame-ancestors': ["'none'"] };

function helmetOptions(policy: Directives): FastifyHelmetOptions {
  return {
    contentSecurityPolicy: { useDefaults: false, directives: policy },
    // Browsers obey it only over HTTPS (RFC 6797 §8.1), that is behind a TLS proxy, and ignore it on plain HTTP.
    // Without includeSubDomains: which other services live under this host's name is the operator's to say.
    strictTransportSecurity: { maxAge: 31_536_000, includeSubDomains: false },
    xFrameOptions: { action: 'deny' },
  };
}

/** Adds @fastify/helmet's headers, with the strict API policy, to every response of the app. */
export async function registerSecurityHeaders(app: FastifyInstance): Promise<void> {
  await app.register(helmet, helmetOptions(API_POLICY));
}

/** Gives every route registered in this scope (and its children) its own content security policy instead. */
export function useContentSecurityPolicy(scope: FastifyInstance, policy: Directives): void {
  const helmetConfig = { contentSecurityPolicy: { useDefaults: false, directives: policy } };
  scope.addHook('onRoute', (route) => {
    // Read by @fastify/helmet at each request, over its global options.
    route.config = { ...route.config, helmet: helmetConfig } as typeof route.config;
  });
}

/**
 * The headers @fastify/helmet sets on an API response, recorded once from the plugin itself: responses that no hook
 * reaches (what Node's parser refuses, what Fastify refuses before routing) are given exactly these.
 */
async function recordSecurityHeaders(): Promise<Readonly<Record<string, string>>> {
  const probe = Fastify();
  await probe.register(helmet, helmetOptions(API_POLICY));
  const recorded: Record<string, string> = {};
  probe.get('/', (_request, reply) => {
    // Before the reply is written, the raw response holds only what the plugin's hook set.
    for (const [name, value] of Object.entries(reply.raw.getHeaders())) recorded[name] = String(value);
    reply.send();
  });
  await probe.inject({ method: 'GET', url: '/' });
  await probe.close();
  if (!recorded['content-security-policy']) throw new Error('@fastify/helmet set no content-security-policy');
  return Object.freeze(recorded);
}

export const SECURITY_HEADERS = await recordSecurityHeaders();
