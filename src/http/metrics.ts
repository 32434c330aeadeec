import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import type { FastifyInstance } from 'fastify';
import type * as PromClient from 'prom-client';
import { AppError } from '../errors.ts';
import type { AuditSink } from '../services/request-context.ts';
import { bearerTokenOf } from './authenticate.ts';
import { unavailableReasonOf } from './error-handler.ts';
import { STANDARD_HEADERS } from './response-hooks.ts';
import { SECURITY_HEADERS } from './security-headers.ts';
import { createClientErrorAnswers, routeRefusingMethod } from './unrouted-requests.ts';

// prom-client is loaded when metrics are turned on (METRICS_TOKEN or METRICS_PORT): 2 MB of heap otherwise unused.
const require = createRequire(import.meta.url);
const prom = (): typeof PromClient => require('prom-client');

export type MetricsRegistry = PromClient.Registry;

export const METRICS_PATH = '/metrics';

// The route label of requests no route matched: one series however many distinct paths are probed.
export const UNMATCHED_ROUTE = 'unmatched';

// 1 ms (a cached read) to 10 s (a login queued behind a flood of hashes); 5xx past that are timeouts anyway.
const DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

const KNOWN_EVENTS = [
  'user_registered',
  'login_succeeded',
  'login_failed',
  'login_throttled',
  'request_throttled',
  'refresh_token_retry',
  'refresh_token_reuse_detected',
];

export interface MetricsSources {
  /** Password hashes running and waiting for a slot; omitted while the hasher cannot tell. */
  hashLoad?: () => { inFlight: number; queued: number };
  /** The PostgreSQL connection pool; omitted on SQLite, which has one connection and no pool. */
  pool?: () => { total: number; idle: number; waiting: number; max: number };
}

export interface MetricsOptions extends MetricsSources {
  registry: MetricsRegistry;
  /** Serves `GET /metrics` on the app's own port to holders of this Bearer token; no route without it. */
  token: string | undefined;
}

/** A registry of this app's own (never prom-client's global one), with Node's process metrics under their usual names. */
export function createMetricsRegistry(labels: Record<string, string> = {}): MetricsRegistry {
  const registry = new (prom().Registry)();
  registry.setDefaultLabels(labels);
  prom().collectDefaultMetrics({ register: registry });
  return registry;
}

/**
 * Times every request by route pattern, method and status, counts 503s, reports the hasher's and the pool's load,
 * and serves `GET /metrics` when a token is given. Returns the audit sink that counts security events.
 */
export function instrumentApp(app: FastifyInstance, options: MetricsOptions): AuditSink {
  const registers = [options.registry];
  const durations = new (prom().Histogram)({
    name: 'gatehouse_http_request_duration_seconds',
    help: 'Time from request to response, by route pattern (unmatched for unknown paths), method and status',
    labelNames: ['method', 'route', 'status_code'],
    buckets: DURATION_BUCKETS,
    registers,
  });
  const unavailable = new (prom().Counter)({
    name: 'gatehouse_http_unavailable_total',
    help: 'Requests answered 503, by route pattern and reason (overloaded, hash_queue_full, hash_queue_timeout, client_gone, database_unavailable, shutting_down, password_check_unavailable, unspecified)',
    labelNames: ['route', 'reason'],
    registers,
  });
  app.addHook('onResponse', (request, reply, done) => {
    // Fastify routes the asterisk form to `/` for any method (it is refused before any route runs): labelled as it is.
    const route =
      request.raw.url === '*'
        ? '*'
        : (request.routeOptions.url ?? routeRefusingMethod(request) ?? UNMATCHED_ROUTE);
    // Scrapes are the monitor's traffic, not the service's.
    if (route !== METRICS_PATH) {
      const status = reply.statusCode;
      durations.observe({ method: request.method, route, status_code: status }, reply.elapsedTime / 1000);
      const reason = unavailableReasonOf(request) ?? 'unspecified';
      if (status === 503 && reason !== 'client_gone') unavailable.inc({ route, reason });
    }
    done();
  });
  // A client that left while its hash waited is answered nothing, and onResponse runs only for an answer sent.
  app.addHook('onError', (request, _reply, error, done) => {
    if (error instanceof AppError && error.unavailableReason === 'client_gone') {
      unavailable.inc({ route: request.routeOptions.url ?? UNMATCHED_ROUTE, reason: 'client_gone' });
    }
    done();
  });
  registerLoadGauges(options);
  if (options.token !== undefined) serveMetrics(app, options.registry, options.token);
  return countSecurityEvents(options.registry);
}

function registerLoadGauges({ registry, hashLoad, pool }: MetricsOptions): void {
  const gauge = (name: string, help: string, read: () => number) =>
    new (prom().Gauge)({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(read());
      },
    });
  if (hashLoad) {
    gauge(
      'gatehouse_password_hashes_in_flight',
      'Password hashes and verifications running',
      () => hashLoad().inFlight,
    );
    gauge(
      'gatehouse_password_hashes_queued',
      'Password hashes and verifications waiting for a slot',
      () => hashLoad().queued,
    );
  }
  if (pool) {
    gauge('gatehouse_db_pool_connections', 'Open PostgreSQL connections, busy or idle', () => pool().total);
    gauge('gatehouse_db_pool_idle_connections', 'Open PostgreSQL connections not in use', () => pool().idle);
    gauge(
      'gatehouse_db_pool_waiting_queries',
      'Queries waiting for a free PostgreSQL connection',
      () => pool().waiting,
    );
    gauge('gatehouse_db_pool_max_connections', 'The PostgreSQL pool size', () => pool().max);
  }
}

// Label values come from the code (event names, reasons, throttling rules), but a field is still data: anything that
// is not a short identifier is one label value, so no caller can grow the number of series.
const IDENTIFIER = /^[A-Za-z0-9_.:-]{1,48}$/;
function labelOf(value: unknown, absent: string): string {
  if (value === undefined || value === null) return absent;
  return typeof value === 'string' && IDENTIFIER.test(value) ? value : 'other';
}

/** The audit sink that counts security events: every event by name, logins by outcome, throttling by rule. */
export function countSecurityEvents(registry: MetricsRegistry): AuditSink {
  const registers = [registry];
  const events = new (prom().Counter)({
    name: 'gatehouse_security_events_total',
    help: 'Security events reported by the use cases (the audit log), by event name',
    labelNames: ['event'],
    registers,
  });
  const logins = new (prom().Counter)({
    name: 'gatehouse_logins_total',
    help: 'Password logins by outcome (succeeded, failed, throttled); reason: why it failed, or the throttling rule',
    labelNames: ['outcome', 'reason'],
    registers,
  });
  const throttled = new (prom().Counter)({
    name: 'gatehouse_throttled_total',
    help: 'Requests refused by throttling: kind login (the login use case), password_check (the password check of a session) or request (a per-IP cap), by rule',
    labelNames: ['kind', 'rule'],
    registers,
  });
  // Series that exist from the start, so that rate() sees their first increment.
  for (const event of KNOWN_EVENTS) events.inc({ event }, 0);
  logins.inc({ outcome: 'succeeded', reason: '' }, 0);
  return (event, fields) => {
    events.inc({ event: labelOf(event, 'other') });
    switch (event) {
      case 'login_succeeded':
        logins.inc({ outcome: 'succeeded', reason: '' });
        break;
      case 'login_failed':
        // A throttled login is audited twice (login_throttled, then login_failed as locked): one login, one outcome.
        if (fields.reason === 'locked') break;
        logins.inc({ outcome: 'failed', reason: labelOf(fields.reason, 'unspecified') });
        break;
      case 'login_throttled': {
        const rule = labelOf(fields.rule, 'unspecified');
        logins.inc({ outcome: 'throttled', reason: rule });
        throttled.inc({ kind: 'login', rule });
        break;
      }
      case 'request_throttled':
        throttled.inc({ kind: 'request', rule: labelOf(fields.rule, 'unspecified') });
        break;
      case 'password_check_throttled':
        throttled.inc({ kind: 'password_check', rule: labelOf(fields.rule, 'unspecified') });
        break;
    }
  };
}

/** What the outbox's sender counts: mails sent, attempts failed, mails given up on, by template. */
export interface MailDeliveryCounters {
  sent(template: string): void;
  failed(template: string, givenUp: boolean): void;
}

export function countMailDeliveries(registry: MetricsRegistry): MailDeliveryCounters {
  const mails = new (prom().Counter)({
    name: 'gatehouse_mail_deliveries_total',
    help: 'Outbox mail deliveries by outcome (sent, failed: an attempt that will be retried, given_up) and template',
    labelNames: ['outcome', 'template'],
    registers: [registry],
  });
  for (const outcome of ['sent', 'failed', 'given_up']) mails.inc({ outcome, template: 'verify_email' }, 0);
  return {
    sent: (template) => mails.inc({ outcome: 'sent', template: labelOf(template, 'other') }),
    failed: (template, givenUp) =>
      mails.inc({ outcome: givenUp ? 'given_up' : 'failed', template: labelOf(template, 'other') }),
  };
}

const digest = (value: string) => createHash('sha256').update(value).digest();

function serveMetrics(app: FastifyInstance, registry: MetricsRegistry, token: string): void {
  // Digests have one length, so the comparison takes the same time whatever was sent.
  const expected = digest(token);
  app.get(
    METRICS_PATH,
    {
      // An operator's endpoint with its own token: not part of the API that users authorise in /docs.
      schema: { hide: true },
      onRequest: async (request) => {
        if (!timingSafeEqual(digest(bearerTokenOf(request)), expected)) {
          throw new AppError('invalid_token', 'Invalid metrics token');
        }
      },
    },
    async (_request, reply) => {
      reply.type(registry.contentType);
      return registry.metrics();
    },
  );
}

export interface ScrapeSource {
  contentType: string;
  scrape(): Promise<string>;
}

/** What a scrape of this process answers: the registry's metrics. */
export function scrapeRegistry(registry: MetricsRegistry): ScrapeSource {
  return { contentType: registry.contentType, scrape: () => registry.metrics() };
}

/**
 * In a cluster worker: answers the primary's requests for this worker's metrics (prom-client's cluster protocol),
 * so that the primary's METRICS_PORT listener reports every worker.
 */
export function shareMetricsWithPrimary(registry: MetricsRegistry): void {
  prom().AggregatorRegistry.setRegistries([registry]);
  // Constructing an aggregator is what installs the worker's side of the protocol.
  void new (prom().AggregatorRegistry)();
}

/** In the cluster's primary: every worker's metrics, gathered over IPC at each scrape. */
export function scrapeWorkers(): ScrapeSource {
  const aggregator = new (prom().AggregatorRegistry)();
  return { contentType: aggregator.contentType, scrape: () => aggregator.clusterMetrics() };
}

function answerJson(response: ServerResponse, status: number, body: object, headers: object = {}): void {
  const text = JSON.stringify(body);
  response.writeHead(status, {
    ...SECURITY_HEADERS,
    ...STANDARD_HEADERS,
    ...headers,
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
  });
  response.end(text);
}

/**
 * Listens on a port of its own for scrapes (METRICS_PORT): `GET /metrics` without authentication, so it belongs on
 * an address only the monitoring network reaches. Resolves once listening; rejects if the port cannot be had.
 */
export async function listenForScrapes(source: ScrapeSource, host: string, port: number): Promise<Server> {
  const server = createServer({ requestTimeout: 10_000, headersTimeout: 10_000 }, (request, response) => {
    if ((request.url ?? '').split('?')[0] !== METRICS_PATH) {
      answerJson(response, 404, { detail: 'Not Found' });
      return;
    }
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      answerJson(response, 405, { detail: 'Method Not Allowed' }, { allow: 'GET, HEAD' });
      return;
    }
    source.scrape().then(
      (body) => {
        response.writeHead(200, {
          ...SECURITY_HEADERS,
          ...STANDARD_HEADERS,
          'content-type': source.contentType,
          'content-length': Buffer.byteLength(body),
        });
        response.end(request.method === 'HEAD' ? undefined : body);
      },
      () => answerJson(response, 503, { detail: 'Metrics are unavailable; try again shortly' }),
    );
  });
  // What Node's parser refuses is answered as on the API's port: the error shape, the security headers, a close.
  server.on('clientError', createClientErrorAnswers().answerClientError);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}
