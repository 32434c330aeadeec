import helmet, { type FastifyHelmetOptions } from '@fastify/helmet';
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';

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

/**
 * Adds the security headers to every response of the app. @fastify/helmet builds helmet's middleware again on every
 * request (two hooks, one a promise, and the policy parsed anew): 4% of GET /conversation's CPU in a profile. Its
 * headers depend only on its options, so they are recorded once from the plugin itself and set from that record.
 */
export function registerSecurityHeaders(app: FastifyInstance): void {
  app.addHook('onRequest', (_request, reply, done) => {
    reply.headers(SECURITY_HEADERS);
    done();
  });
}

/** Gives every route registered in this scope (and its children) its own content security policy instead. */
export async function useContentSecurityPolicy(scope: FastifyInstance, policy: Directives): Promise<void> {
  const recorded = await recordSecurityHeaders(policy);
  // Only what differs from the API's set, which the app's hook has already put on the reply.
  const headers = Object.fromEntries(
    Object.entries(recorded).filter(([name, value]) => SECURITY_HEADERS[name] !== value),
  );
  const setHeaders = (_request: unknown, reply: FastifyReply, done: () => void) => {
    reply.headers(headers);
    done();
  };
  scope.addHook('onRoute', (route) => {
    // A route's own hooks run after the app's, so these replace the API's values.
    route.onRequest = [setHeaders, ...[route.onRequest ?? []].flat()] as typeof route.onRequest;
  });
}

/**
 * The headers @fastify/helmet sets for a policy, recorded once from the plugin itself. The API's are also given to
 * responses that no hook reaches (what Node's parser refuses, what Fastify refuses before routing).
 */
async function recordSecurityHeaders(policy: Directives): Promise<Readonly<Record<string, string>>> {
  const probe = Fastify();
  await probe.register(helmet, helmetOptions(policy));
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

export const SECURITY_HEADERS = await recordSecurityHeaders(API_POLICY);
