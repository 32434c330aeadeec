import { randomUUID } from 'node:crypto';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, LogController } from 'fastify';
import pino, { type DestinationStream } from 'pino';
import type { Config } from './config.ts';
import { createAuditEventsRepository } from './db/audit-events.ts';
import type { DbHandle } from './db/connect.ts';
import { createConversationsRepository } from './db/conversations.ts';
import { createCounterStore } from './db/counters.ts';
import { createEmailFlowsRepository } from './db/email-flows.ts';
import { createEmailOutboxRepository } from './db/email-outbox.ts';
import { pingDatabase } from './db/health.ts';
import { createKnownIpsRepository } from './db/known-ips.ts';
import { createMfaRepository } from './db/mfa.ts';
import { createOneTimeTokensRepository } from './db/one-time-tokens.ts';
import { createPasskeysRepository } from './db/passkeys.ts';
import { createRefreshTokensRepository } from './db/refresh-tokens.ts';
import { createSessionsRepository } from './db/sessions.ts';
import { createSigningKeysRepository } from './db/signing-keys.ts';
import { createUsersRepository } from './db/users.ts';
import { isEmailAddress } from './domain/email.ts';
import { AppError } from './errors.ts';
import { registerAccountPage } from './http/account-page.ts';
import { requireLiveSession, requireVerifiedAccessToken } from './http/authenticate.ts';
import { provideBackgroundWork } from './http/background-work.ts';
import { registerBodilessRoutesParser, registerJsonParser } from './http/body-parsers.ts';
import { registerChangeRequestRules } from './http/change-requests.ts';
import { registerClientIp } from './http/client-ip.ts';
import { limitConnections, limitPipelining } from './http/connections.ts';
import { registerCors } from './http/cors.ts';
import { registerDraining } from './http/draining.ts';
import { pacedErrorHandler } from './http/error-handler.ts';
import {
  heapGuardBytes,
  PRESSURE_LIMITS,
  type PressureLimits,
  registerLoadShedding,
  reportOtherWork,
} from './http/load-shedding.ts';
import {
  countMailDeliveries,
  createMetricsRegistry,
  instrumentApp,
  type MetricsRegistry,
} from './http/metrics.ts';
import { registerOpenApi } from './http/openapi.ts';
import { createRefusalPacer, releaseHeldRefusalsOnClose } from './http/refusal-pacing.ts';
import { provideAuditTrail, registerAuditSinks } from './http/request-context.ts';
import { lazyRequestLogger } from './http/request-logger.ts';
import { registerResponseHooks } from './http/response-hooks.ts';
import { accountRoutes } from './http/routes/account.ts';
import { activityRoutes } from './http/routes/activity.ts';
import { adminRoutes } from './http/routes/admin.ts';
import { conversationRoutes } from './http/routes/conversation.ts';
import { accountEmailRoutes, emailRoutes } from './http/routes/email.ts';
import { healthRoutes } from './http/routes/health.ts';
import { jwksRoutes } from './http/routes/jwks.ts';
import { messageRoutes } from './http/routes/messages.ts';
import { mfaRoutes } from './http/routes/mfa.ts';
import { passkeyAccountRoutes, passkeyLoginRoutes } from './http/routes/passkeys.ts';
import { registerRoutes } from './http/routes/register.ts';
import { registerTokenEndpointHeaders, tokenRoutes } from './http/routes/token.ts';
import { registerSecurityHeaders } from './http/security-headers.ts';
import {
  answerConnect,
  answerFrameworkError,
  createClientErrorAnswers,
  MAX_HEADER_BYTES,
  MAX_TARGET_BYTES,
  registerMethodNotAllowed,
  registerRequestTargetRules,
  routeExpectations,
} from './http/unrouted-requests.ts';
import { createWebClientCookies, refuseCrossSiteWebClients } from './http/web-client.ts';
import { createSmtpTransport } from './outbound/smtp.ts';
import { createAccessTokens } from './security/access-tokens.ts';
import { createBreachedPasswordsCheck } from './security/breached-passwords.ts';
import { createClientIpResolver } from './security/client-ip.ts';
import type { Clock } from './security/clock.ts';
import { createDeviceTokens } from './security/device-tokens.ts';
import { logRedaction } from './security/log-redaction.ts';
import { createPasswordPolicy } from './security/password-policy.ts';
import type { PasswordHasher } from './security/passwords.ts';
import { createSecretBox, deriveDeviceTokenKey, deriveRefreshTokenKey } from './security/secret-box.ts';
import { createAccountsService, type PasswordCheckThrottle } from './services/accounts.ts';
import { createAuditTrail } from './services/audit.ts';
import { createBackgroundWork } from './services/background-work.ts';
import { createConversationsService } from './services/conversations.ts';
import { createEmailChangeMailer, createEmailFlowsService } from './services/email-flows.ts';
import { type LoadedKeyRing, loadKeyRing } from './services/keys.ts';
import { createKnownClients } from './services/known-clients.ts';
import { createLoginService, type LoginThrottling } from './services/login.ts';
import {
  createMailComposer,
  createMailRenderer,
  createOutboxRetention,
  type MailDelivery,
} from './services/mail.ts';
import { createMailSender } from './services/mail-sender.ts';
import { createMfaService } from './services/mfa.ts';
import { createOperatorService } from './services/operators.ts';
import { createPasskeysService } from './services/passkeys.ts';
import type { AuditSink, RequestContext } from './services/request-context.ts';
import { createSessionsService } from './services/sessions.ts';
import { createThrottle, type Throttle, throttleKeysOf } from './services/throttle.ts';

export interface AppDependencies {
  db: DbHandle;
  clock: Clock;
  passwords: PasswordHasher;
  /** Where logs go; stdout when omitted. */
  logStream?: DestinationStream;
  /**
   * Where metrics are kept when METRICS_TOKEN or METRICS_PORT is set: main.ts passes the one its METRICS_PORT
   * listener reads; without it the app makes its own.
   */
  metricsRegistry?: MetricsRegistry;
}

export interface AppOptions {
  /** How long a request (headers and body) may take to arrive; tests shorten it. */
  requestTimeoutMs?: number;
  /** When the event loop counts as overloaded; tests lower the limits to provoke it. */
  pressure?: Partial<PressureLimits>;
  /** Where the account page's build is; dist/web when omitted. */
  accountPageDirectory?: string;
}

const KEY_RELOAD_INTERVAL_SECONDS = 30;

const REQUEST_TIMEOUT_MS = 30_000;

// Soon after start as well as hourly: instances restarted more often than hourly must still prune.
const FIRST_AUDIT_PRUNE_DELAY_MS = 60_000;
const AUDIT_PRUNE_INTERVAL_MS = 3600_000;

const CONNECTION_TIMEOUT_MS = 120_000;
// Requests one connection may have waiting for their answers (limitPipelining); one more closes it.
const MAX_PIPELINED_REQUESTS = 16;

/** Builds the HTTP application over the given database, clock and hasher; never listens. */
export async function buildApp(
  config: Config,
  deps: AppDependencies,
  options: AppOptions = {},
): Promise<FastifyInstance> {
  const requestTimeoutMs = options.requestTimeoutMs ?? REQUEST_TIMEOUT_MS;
  const clientIp = createClientIpResolver(config.clientIp);
  const behindProxies = config.clientIp.trustedProxies.length > 0;
  const logger = pino(
    {
      level: config.logLevel,
      ...logRedaction,
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    deps.logStream ?? pino.destination({ sync: false }),
  );
  const clientErrors = createClientErrorAnswers();
  const app = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    // One line per request from the onResponse hook below instead of Fastify's two.
    logController: new LogController({ disableRequestLogging: true }),
    childLoggerFactory: lazyRequestLogger,
    genReqId: () => randomUUID(),
    requestIdHeader: false,
    // Never `true` or a hop count: both let a client write its own address (config.ts refuses them).
    trustProxy: behindProxies ? (address: string) => clientIp.isTrusted(address) : false,
    bodyLimit: config.bodyLimitBytes,
    // find-my-way drops a route whose parameter is longer (100 by default), and the request answered 404 before its
    // authentication and validation; the target's own limit (414) bounds a parameter instead.
    routerOptions: { maxParamLength: MAX_TARGET_BYTES },
    http: {
      // Refused by registerRequestTargetRules instead, in the error table's shape.
      requireHostHeader: false,
      // A backstop past the target's and headers' own limits (16 KiB each, refused 414 and 431 by
      // registerRequestTargetRules), which the parser cannot tell apart.
      maxHeaderSize: MAX_HEADER_BYTES,
      // A request (headers and body) must arrive within this, or Node answers 408 and closes: a client that drips
      // its headers or body cannot hold a connection, and a slot of the database pool behind it, indefinitely.
      // Node's own header limit (60 s) would otherwise outlast the request limit, and its check of both runs every
      // 30 s by default, which let a dripping client live for up to 85 s.
      requestTimeout: requestTimeoutMs,
      headersTimeout: requestTimeoutMs,
      connectionsCheckingInterval: Math.min(1000, requestTimeoutMs),
    },
    requestTimeout: requestTimeoutMs,
    // A connection with no traffic either way for this long is closed: a client that sends requests and never reads
    // their answers held its connection (and a MAX_CONNECTIONS slot) for good, since Node times out requests, not
    // writes (found from outside). Longer than the keep-alive Fastify announces (72 s), which closes idle ones first.
    connectionTimeout: CONNECTION_TIMEOUT_MS,
    // During a stop, a request on a kept-alive connection is served (and the connection closed after it), not refused
    // with Fastify's own 503 body.
    return503OnClosing: false,
    frameworkErrors: answerFrameworkError,
    clientErrorHandler: clientErrors.answerClientError,
    ajv: {
      // verbose: a problem carries the value and the field's schema, so that a 422 says what FastAPI says of them.
      customOptions: { coerceTypes: false, allErrors: true, removeAdditional: false, verbose: true },
      // Over ajv-formats' own `email`: the same rule, from the place the import of the FastAPI seed reads it too.
      onCreate: (ajv) => ajv.addFormat('email', isEmailAddress),
    },
  }).withTypeProvider<TypeBoxTypeProvider>();
  limitConnections(app.server, config.maxConnections, app.log);
  limitPipelining(app, MAX_PIPELINED_REQUESTS);
  registerJsonParser(app);
  registerBodilessRoutesParser(app);
  // First of all hooks, so that every later reader of request.ip sees the client.
  if (behindProxies) registerClientIp(app, clientIp.resolve);

  const { argon2 } = config.passwords;
  if (argon2.memoryKib < 19456 || argon2.timeCost < 2) {
    app.log.warn({ argon2 }, 'argon2id parameters are below the OWASP minimum (19456 KiB, t=2, p=1)');
  }
  const db = deps.db.db;
  const auditTrail = createAuditTrail({
    auditEvents: createAuditEventsRepository(db),
    clock: deps.clock,
    retentionDays: config.auditRetentionDays,
    // Each event also went to the log when it was recorded: the log keeps what the table lost.
    onEventsNotStored: (count, error) => app.log.warn({ count, err: error }, 'audit events not stored'),
  });
  provideAuditTrail(app, auditTrail);
  app.addHook('onClose', () => auditTrail.flush());
  // After the flush's hook, so that it runs before it (Fastify runs onClose hooks last-added first): the work may
  // still record events.
  const backgroundWork = createBackgroundWork(
    (task, error) =>
      // An account deleted between the answer and its work (a mail for it, say): there is nothing left to do.
      error instanceof AppError && error.code === 'account_gone'
        ? app.log.info({ task }, 'background work found its account gone')
        : app.log.error({ err: error, task }, 'background work failed'),
    () => 50 + Math.random() * 200,
  );
  provideBackgroundWork(app, backgroundWork);
  const outboxRetention = createOutboxRetention({
    outbox: createEmailOutboxRepository(db, deps.db.dialect),
    clock: deps.clock,
    retentionDays: config.auditRetentionDays,
  });
  const pruneAuditEvents = () => {
    auditTrail
      .pruneExpiredEvents()
      .then((pruned) => pruned > 0 && app.log.info({ pruned }, 'pruned audit events'))
      .catch((error) => app.log.warn({ err: error }, 'pruning audit events failed'));
    outboxRetention
      .pruneOldMails()
      .then((pruned) => pruned > 0 && app.log.info({ pruned }, 'pruned mails'))
      .catch((error) => app.log.warn({ err: error }, 'pruning mails failed'));
  };
  const firstAuditPrune = setTimeout(pruneAuditEvents, FIRST_AUDIT_PRUNE_DELAY_MS);
  firstAuditPrune.unref();
  const auditPrune = setInterval(pruneAuditEvents, AUDIT_PRUNE_INTERVAL_MS);
  auditPrune.unref();
  app.addHook('onClose', async () => {
    clearTimeout(firstAuditPrune);
    clearInterval(auditPrune);
  });
  const users = createUsersRepository(db);
  const { breachCheck } = config.passwords;
  const passwordPolicy = createPasswordPolicy({
    minLength: config.passwords.minLength,
    maxLength: config.passwords.maxLength,
    breachedPasswords:
      breachCheck &&
      createBreachedPasswordsCheck({
        ...breachCheck,
        onUnavailable: (reason) =>
          app.log.warn(
            { reason },
            breachCheck.failure === 'open'
              ? 'breached-password check unavailable: password accepted without it'
              : 'breached-password check unavailable: request refused (BREACHED_PASSWORD_CHECK_FAILURE=closed)',
          ),
      }),
  });
  app.addHook('onClose', () => passwordPolicy.close());
  const [currentSecret] = config.secrets;
  if (currentSecret === undefined) throw new Error('buildApp needs config.secrets (GATEHOUSE_SECRET)');
  const { token: metricsToken, port: metricsPort } = config.metrics;
  const metricsRegistry =
    metricsToken !== undefined || metricsPort !== undefined
      ? (deps.metricsRegistry ?? createMetricsRegistry())
      : undefined;
  // For the flows that mail (issue 13): they queue in their own transactions and call mail.mailQueued() after.
  const mail = startMailDelivery(app, config, deps, metricsRegistry);
  const throttling = buildThrottling(app, config, deps);
  const emailLinks = {
    mail: mail.composer,
    // PUBLIC_URL, never the request's Host: a forged Host would otherwise send users a link to another site.
    publicUrl: mail.publicUrl,
    mailQueued: mail.mailQueued,
    clock: deps.clock,
    throttle: throttling?.throttle,
  };
  const accounts = createAccountsService({
    users,
    hasher: deps.passwords,
    policy: passwordPolicy,
    clock: deps.clock,
    maxPasswordLength: config.passwords.maxLength,
    onRehashFailed: (error) => app.log.warn({ err: error }, 'password rehash failed'),
    onUnverifiableHash: (userId, problem) =>
      app.log.warn({ userId, problem }, 'stored password hash refused: nobody can log in to this account'),
    emailChanges: createEmailChangeMailer(emailLinks),
    ...(throttling
      ? {
          // The change has committed: a counter store that fails now is reported, not answered as a 5xx.
          onPasswordChanged: (username: string) =>
            throttling.throttle
              .forgetAccountFailures(username)
              .catch((error) =>
                app.log.warn({ err: error }, 'clearing login failures after a password change failed'),
              ),
          passwordChecks: passwordChecksOf(throttling.throttle),
          admitIdentifierConflict: throttling.throttle.admitIdentifierConflict,
        }
      : {}),
  });
  await accounts.equaliseFailureTiming();
  const keys = await loadConfiguredKeyRing(config, deps.db, deps.clock, (kid, error) =>
    app.log.warn(
      { kid, err: error },
      'signing key added elsewhere cannot be decrypted with this GATEHOUSE_SECRET',
    ),
  );
  const keyReload = setInterval(() => {
    keys.reload().catch((error) => app.log.warn({ err: error }, 'signing key reload failed'));
  }, KEY_RELOAD_INTERVAL_SECONDS * 1000);
  keyReload.unref();
  app.addHook('onClose', async () => clearInterval(keyReload));
  const accessTokens = createAccessTokens({
    keys,
    issuer: config.jwt.issuer,
    audience: config.jwt.audience,
    ttlSeconds: config.jwt.accessTokenTtlSeconds,
    clock: deps.clock,
  });
  const sessionPolicy = { idleTtlSeconds: config.sessions.idleTtlSeconds };
  const sessions = createSessionsService({
    accessTokens,
    sessions: createSessionsRepository(db, deps.db.dialect),
    refreshTokens: createRefreshTokensRepository(db, deps.db.dialect),
    users,
    clock: deps.clock,
    // From GATEHOUSE_SECRET, never from the database: a copy of the database alone cannot derive live refresh tokens.
    refreshDerivationKey: deriveRefreshTokenKey(currentSecret),
    policy: sessionPolicy,
    maxLifetimeSeconds: config.sessions.maxLifetimeSeconds,
    reuseGraceSeconds: config.sessions.reuseGraceSeconds,
  });
  const pruneSessions = setInterval(() => {
    sessions
      .pruneEndedSessions()
      .then((pruned) => pruned > 0 && app.log.info({ pruned }, 'pruned ended sessions'))
      .catch((error) => app.log.warn({ err: error }, 'pruning sessions failed'));
  }, 3600_000);
  pruneSessions.unref();
  app.addHook('onClose', async () => clearInterval(pruneSessions));
  // One of each: the MFA grant, the passkey ceremonies and the operator's reset share them.
  const mfaRepository = createMfaRepository(db);
  const passkeysRepository = createPasskeysRepository(db);
  const mfa = createMfaService({
    mfa: mfaRepository,
    users,
    accounts,
    box: createSecretBox(config.secrets),
    hasher: deps.passwords,
    clock: deps.clock,
    mail,
    // What authenticator apps list the account under; the passkeys' WEBAUTHN_RP_NAME defaults to the same.
    issuer: 'Gatehouse',
    throttle: throttling?.throttle,
    // Passkeys as a second factor. Late-bound: the passkeys service, built next, follows this one's rules.
    webauthn: { verifySecondFactor: (...args) => passkeys.verifySecondFactor(...args) },
    countPasskeys: (userId) => passkeysRepository.countUsablePasskeys(userId),
    sessions,
  });
  const passkeys = createPasskeysService({
    passkeys: passkeysRepository,
    users,
    mfa,
    clock: deps.clock,
    mail,
    rp: config.webauthn,
    throttle: throttling?.throttle,
  });
  const countPasskeys = (userId: number) => passkeys.countPasskeys(userId);
  const login = createLoginService({
    accounts,
    sessions,
    throttling,
    hashQueue: deps.passwords,
    requireVerifiedEmail: config.requireVerifiedEmail,
    secondFactors: mfa,
    mfa,
    passkeys,
  });
  const emailFlows = createEmailFlowsService({
    ...emailLinks,
    users,
    tokens: createOneTimeTokensRepository(db),
    flows: createEmailFlowsRepository(db),
    hasher: deps.passwords,
    policy: passwordPolicy,
    background: backgroundWork,
    secondFactors: mfa,
    passkeys,
    ...(throttling
      ? {
          onPasswordReset: (username: string, context: RequestContext) =>
            throttling.throttle.forgetFailuresAfterReset(
              username,
              throttling.throttle.clientKey(context.ipAddress),
            ),
        }
      : {}),
    onAftermathFailed: (error) =>
      app.log.warn({ err: error }, 'password reset done, but its login-throttling counters were not cleared'),
  });
  const conversations = createConversationsService({
    conversations: createConversationsRepository(db, deps.db.dialect),
    clock: deps.clock,
    policy: sessionPolicy,
  });

  const operators = createOperatorService({
    users,
    sessions: createSessionsRepository(db, deps.db.dialect),
    signingKeys: createSigningKeysRepository(db),
    box: createSecretBox(config.secrets),
    secondFactors: {
      mfa: mfaRepository,
      mail: mail.composer,
      passkeys: passkeysRepository,
    },
    auditTrail,
    accountFailures: throttling ? { kind: 'reachable', throttle: throttling.throttle } : { kind: 'off' },
    clock: deps.clock,
    policy: sessionPolicy,
  });

  const refusalPacer = createRefusalPacer(config.refusalPacing);
  releaseHeldRefusalsOnClose(app, refusalPacer);
  app.setErrorHandler(pacedErrorHandler(refusalPacer));
  // First of the onRequest hooks, so that an answer any later hook sends carries the headers too.
  registerSecurityHeaders(app);
  registerResponseHooks(app);
  registerTokenEndpointHeaders(app);
  registerRequestTargetRules(app, registerMethodNotAllowed(app));
  clientErrors.noteOAuthRoutes(app);
  registerChangeRequestRules(app);
  const expectationsRouted = routeExpectations(app.server, config.bodyLimitBytes);
  app.server.on('checkExpectation', expectationsRouted);
  app.server.on('checkContinue', expectationsRouted);
  app.server.on('connect', answerConnect);
  // A client may end its side once its request is sent and still read the answer (RFC 9293 §3.6). Node's default takes
  // that FIN for a client gone and drops an answer written later: a refresh's rotation was committed and never
  // delivered (found from outside). Work that waits (a queued hash) still stops at the FIN (clientGone).
  (app.server as { httpAllowHalfOpen?: boolean }).httpAllowHalfOpen = true;
  const auditSinks: AuditSink[] = [
    (event, fields, origin) =>
      auditTrail.record({
        event,
        fields,
        ipAddress: origin.ipAddress,
        userAgent: origin.userAgent,
        requestId: origin.requestId,
      }),
  ];
  if (metricsRegistry) {
    // PasswordHasher.load() comes with the hash queue's bound; a hasher without it reports no hash gauges.
    const { load } = deps.passwords as { load?: () => { inFlight: number; queued: number } };
    auditSinks.push(
      instrumentApp(app, {
        registry: metricsRegistry,
        token: config.metrics.token,
        ...(load ? { hashLoad: () => load.call(deps.passwords) } : {}),
        ...(deps.db.poolStats ? { pool: deps.db.poolStats } : {}),
      }),
    );
  }
  registerAuditSinks(app, auditSinks);
  if (config.corsOrigins.length > 0) await registerCors(app, config.corsOrigins);
  // Before the event-loop guard: the reads it refuses are the other work that most needs the core.
  reportOtherWork(app, deps.passwords);
  await registerLoadShedding(app, {
    ...PRESSURE_LIMITS,
    maxHeapUsedBytes: heapGuardBytes(config.maxHeapUsedBytes),
    ...options.pressure,
  });
  refuseCrossSiteWebClients(app);
  const isDraining = registerDraining(app);

  if (config.docsEnabled) await registerOpenApi(app);
  await registerAccountPage(app, options.accountPageDirectory);
  await app.register(healthRoutes, {
    isDatabaseReachable: () =>
      pingDatabase(db).then(
        async () => {
          await deps.db.probeWrites?.();
          // Answering a read is not enough where nothing can be written (a full disk, a file deleted under it).
          const problem = deps.db.problem?.();
          if (problem) app.log.warn({ reason: problem }, 'database unusable');
          return problem === undefined;
        },
        (error) => {
          app.log.warn({ err: error }, 'database unreachable');
          return false;
        },
      ),
    isDraining,
  });
  await app.register(jwksRoutes, { publicJwks: () => keys.publicJwks() });
  await app.register(registerRoutes, { accounts, throttle: throttling?.throttle });
  await app.register(emailRoutes, { emailFlows });
  await app.register(passkeyLoginRoutes, { passkeys });
  await app.register(async (conversationScope) => {
    requireVerifiedAccessToken(conversationScope, sessions);
    await conversationScope.register(conversationRoutes, { conversations });
  });
  const cookies = createWebClientCookies({
    refreshMaxAgeSeconds: config.sessions.idleTtlSeconds,
    deviceMaxAgeSeconds: config.throttling.deviceTokenTtlDays * 86400,
  });
  // The routes that read or write the web client's cookies; no other route parses a Cookie header.
  await app.register(async (cookieScope) => {
    await cookies.register(cookieScope);
    await cookieScope.register(tokenRoutes, { login, sessions, cookies, passwordless: true });
    await cookieScope.register(async (protectedScope) => {
      requireLiveSession(protectedScope, sessions);
      await protectedScope.register(messageRoutes, { conversations, throttle: throttling?.throttle });
      await protectedScope.register(accountRoutes, { accounts, sessions, cookies });
      await protectedScope.register(accountEmailRoutes, { emailFlows });
      await protectedScope.register(mfaRoutes, { mfa, countPasskeys });
      await protectedScope.register(activityRoutes, { auditTrail });
      await protectedScope.register(adminRoutes, { operators });
      await protectedScope.register(passkeyAccountRoutes, { passkeys });
    });
  });
  return app;
}

/**
 * The outbox's sender, when SMTP_URL is set: it starts with the app and stops when the app closes. Several instances
 * (or workers) may each run one; the outbox's lease keeps them from sending a mail twice.
 */
function startMailDelivery(
  app: FastifyInstance,
  config: Config,
  deps: AppDependencies,
  metricsRegistry: MetricsRegistry | undefined,
): MailDelivery {
  const box = createSecretBox(config.secrets);
  const delivery = { composer: createMailComposer(box), publicUrl: config.mail.publicUrl };
  const { smtpUrl } = config.mail;
  if (smtpUrl === undefined) return { ...delivery, mailQueued: () => {} };
  const counters = metricsRegistry ? countMailDeliveries(metricsRegistry) : undefined;
  const sender = createMailSender({
    outbox: createEmailOutboxRepository(deps.db.db, deps.db.dialect),
    renderer: createMailRenderer(box),
    transport: createSmtpTransport(smtpUrl),
    from: config.mail.from,
    clock: deps.clock,
    events: {
      sent: (mail) => {
        counters?.sent(mail.template);
        app.log.debug(mail, 'mail sent');
      },
      failed: (mail, reason, retryAtMs) => {
        counters?.failed(mail.template, retryAtMs === undefined);
        app.log.warn(
          { ...mail, reason, retryAt: retryAtMs === undefined ? null : new Date(retryAtMs).toISOString() },
          retryAtMs === undefined ? 'mail not sent: given up' : 'mail not sent: will retry',
        );
      },
      outboxUnavailable: (error) => app.log.warn({ err: error }, 'mail outbox unreachable: sending paused'),
      outboxAvailable: () => app.log.info('mail outbox reachable again'),
    },
  });
  app.addHook('onReady', async () => sender.start());
  app.addHook('onClose', () => sender.stop());
  return { ...delivery, mailQueued: () => sender.wake() };
}

/** Login throttling (THROTTLING.md) over counters in memory, the cluster's primary or Redis; undefined when off. */
function buildThrottling(
  app: FastifyInstance,
  config: Config,
  deps: AppDependencies,
): LoginThrottling | undefined {
  if (!config.throttling.enabled) return undefined;
  const counters = createCounterStore({
    redis: config.redis,
    onStoreStateChange: (state, error) =>
      state === 'unreachable'
        ? app.log.warn(
            { err: error },
            'rate-limit store unreachable: counting in this process until it is back',
          )
        : app.log.info('rate-limit store reachable again'),
  });
  // The first requests count where every instance counts, not in this process because Redis was still connecting. A
  // Redis that does not answer is not a reason to refuse to start (the process counts until it does); and Fastify
  // takes a value an onReady hook resolves with for an error, so the answer is dropped.
  app.addHook('onReady', async () => {
    await counters.ready();
  });
  app.addHook('onClose', () => counters.close());
  const rememberSeconds = config.throttling.deviceTokenTtlDays * 86400;
  return {
    throttle: createThrottle(counters, config.throttling, throttleKeysOf(config.secrets)),
    knownClients: createKnownClients({
      knownIps: createKnownIpsRepository(deps.db.db),
      // Signed with the current secret, accepted under the older ones of a rotation.
      deviceTokens: createDeviceTokens(config.secrets.map(deriveDeviceTokenKey), rememberSeconds),
      clock: deps.clock,
      knownIpsPerUser: config.throttling.knownIpsPerUser,
      rememberSeconds,
    }),
  };
}

/**
 * Opens the signing-key ring this configuration describes, creating the first key if there is none: the one wiring
 * of it, for the server and for the cluster's primary, which makes that first key before its workers start.
 */
export function loadConfiguredKeyRing(
  config: Config,
  handle: DbHandle,
  clock: Clock,
  onUnreadableKey?: (kid: string, error: unknown) => void,
): Promise<LoadedKeyRing> {
  return loadKeyRing({
    algorithm: config.jwt.algorithm,
    secret: config.jwt.secret,
    signingKeys: createSigningKeysRepository(handle.db),
    box: createSecretBox(config.secrets),
    ...(onUnreadableKey ? { onUnreadableKey } : {}),
    clock,
    // A superseded key verifies while tokens it signed can live, and while other instances still sign with it.
    retireAfterSeconds: config.jwt.accessTokenTtlSeconds + 2 * KEY_RELOAD_INTERVAL_SECONDS + 60,
  });
}

/**
 * The account endpoints' password checks, throttled as logins of the account. The caller holds a live session, so it
 * counts as trusted (the account's own user is never locked out by R2 or R3), and the session is its client: R1 counts
 * its checks together from whichever address they come, where a stolen access token sent from a new address each time
 * had guessed without end; R4 counts them per address too.
 */
function passwordChecksOf(throttle: Throttle): PasswordCheckThrottle {
  const attemptOf = (username: string, context: RequestContext) => ({
    username,
    ip: throttle.clientKey(context.ipAddress),
    deviceId: context.sessionId === undefined ? undefined : `session:${context.sessionId}`,
    trusted: true,
  });
  return {
    reserve: (username, context) => throttle.reserveLoginAttempt(attemptOf(username, context)),
    succeeded: (username, context) => throttle.recordLoginSuccess(attemptOf(username, context)),
  };
}
