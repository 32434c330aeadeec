import './runtime-check.ts';
import { execFileSync } from 'node:child_process';
import cluster, { type Worker } from 'node:cluster';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import { setPriority, userInfo } from 'node:os';
import { createInterface } from 'node:readline/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import closeWithGrace from 'close-with-grace';
import { buildApp, loadConfiguredKeyRing } from './app.ts';
import { resolveCommandLine, runCommand } from './commands/cli.ts';
import { type OpenedDatabase, openDatabase } from './commands/open-database.ts';
import type { CommandIo } from './commands/output.ts';
import type { SecretSource } from './commands/secret.ts';
import {
  type Config,
  ConfigError,
  cleartextLinkWarning,
  loadConfig,
  parseSecretList,
  withSecrets,
} from './config.ts';
import { startClusterCounters } from './db/counters.ts';
import {
  assertDatabaseFileOrNothing,
  readOrCreateSecretFile,
  type SecretFile,
  secretFilePath,
} from './db/data-directory.ts';
import { AppError } from './errors.ts';
import {
  createMetricsRegistry,
  listenForScrapes,
  type ScrapeSource,
  scrapeRegistry,
  scrapeWorkers,
  shareMetricsWithPrimary,
} from './http/metrics.ts';
import { systemClock } from './security/clock.ts';
import { createPasswordHasher } from './security/passwords.ts';
import { generateSecret } from './security/secret-box.ts';

/** The soft limit on open files from /proc (Linux); undefined elsewhere. */
function readOpenFileLimit(): number | undefined {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((entry) => entry.startsWith('Max open files'));
    const soft = Number(line?.split(/\s+/)[3]);
    return Number.isSafeInteger(soft) ? soft : undefined;
  } catch {
    return undefined;
  }
}

function readConfig(): Config {
  if (existsSync('.env')) process.loadEnvFile('.env');
  try {
    return loadConfig(process.env, { openFileLimit: readOpenFileLimit() });
  } catch (error) {
    if (error instanceof ConfigError) {
      for (const problem of error.problems) console.error(`gatehouse: configuration error: ${problem}`);
      process.exit(1);
    }
    throw error;
  }
}

const warn = (line: string) => console.warn(`gatehouse: warning: ${line}`);

/**
 * Without GATEHOUSE_SECRET (allowed on SQLite only), the key-encryption secret lives in `secret.key` beside the
 * database, made on first start, so that `npm start` needs no set-up. A worker reads the file its primary made.
 */
function resolveSecrets(config: Config): { config: Config; source: SecretSource } {
  if (process.env.REFRESH_TOKEN_SECRET) {
    warn('REFRESH_TOKEN_SECRET is no longer read: the refresh-token key is derived from GATEHOUSE_SECRET');
  }
  if (config.secrets.length > 0 || config.database.kind !== 'sqlite') {
    return { config, source: { kind: 'environment' } };
  }
  if (config.database.path === ':memory:') {
    // Nothing outlives the process, so neither need the secret.
    return { config: withSecrets(config, [generateSecret()]), source: { kind: 'environment' } };
  }
  try {
    assertDatabaseFileOrNothing(config.database.path);
  } catch (error) {
    console.error(`gatehouse: DATABASE_URL: ${(error as Error).message}`);
    process.exit(1);
  }
  const path = secretFilePath(config.database.path);
  let file: SecretFile;
  try {
    file = readOrCreateSecretFile(path, generateSecret());
  } catch (error) {
    console.error(`gatehouse: cannot read or create ${path}: ${(error as Error).message}`);
    process.exit(1);
  }
  const problems: string[] = [];
  const secrets = parseSecretList(file.content, problems);
  if (problems.length > 0) {
    for (const problem of problems)
      console.error(`gatehouse: ${path}: ${problem.replace(/GATEHOUSE_SECRET/g, 'the secret')}`);
    process.exit(1);
  }
  if (file.exposedMode && cluster.isPrimary) {
    warn(
      `${path} was readable by other users (mode ${file.exposedMode}); it is now 0600, but if anyone may have read it, rotate it: npm run gatehouse -- secret rotate`,
    );
  }
  if (file.created && cluster.isPrimary) {
    console.warn(
      `gatehouse: made the key-encryption secret ${path} (0600): keep it apart from database backups, and set GATEHOUSE_SECRET instead when running several machines`,
    );
  }
  return { config: withSecrets(config, secrets), source: { kind: 'file', path } };
}

/**
 * Password hashes saturate libuv's threadpool by design, and every thread they take is a core the event loop may
 * want. As SCHED_IDLE (`idle`, the default) the pool's threads run only on cores no other thread wants, and give a
 * core back at once when the event loop wakes: reads keep their latency under a login flood (issue 5 measures it).
 * At nice 19 (`low`) they get a 15/1024 share against the event loop instead of 3/1024, but the scheduler lets them
 * finish their slice before the event loop runs, which is the latency `idle` avoids. Either way, logins get the
 * cores the event loop does not use: all but one of them when the machine runs nothing else. Linux only; returns
 * what it could not do.
 */
function deprioritiseThreadpool(priority: Config['hashThreadPriority']): string | undefined {
  if (priority === 'normal') return undefined;
  let threads: string[];
  try {
    threads = readdirSync('/proc/self/task').filter(
      (tid) => readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim() === 'libuv-worker',
    );
  } catch {
    return 'no /proc/self/task: hashing threads keep their priority';
  }
  let failure: string | undefined;
  for (const tid of threads) {
    try {
      setPriority(Number(tid), 19);
      if (priority === 'idle') execFileSync('chrt', ['--idle', '--pid', '0', tid], { stdio: 'ignore' });
    } catch (error) {
      failure ??= `hashing thread ${tid}: ${(error as Error).message}; the others were still lowered`;
    }
  }
  return failure;
}

/**
 * Tracks the server's connections; returns what closes those holding no request that the server is answering. Node's
 * closeIdleConnections leaves a connection that has not sent a whole request (a load balancer's spare connection, a
 * client still sending its headers): none holds an accepted request, yet each would hold the exit until its request
 * timeout, past the grace period.
 */
function connectionCloser(server: Server): () => void {
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  return () => {
    server.closeIdleConnections();
    // Node sets a socket's _httpMessage to the response it is writing, from the request's arrival to the response's
    // end; its own closeIdleConnections reads it the same way.
    for (const socket of sockets) {
      if (!(socket as Socket & { _httpMessage?: unknown })._httpMessage) socket.destroy();
    }
  };
}

async function prepareDatabase(config: Config): Promise<OpenedDatabase> {
  try {
    // Workers find the database prepared by their primary; only the primary reports what it mended.
    return await openDatabase(config, cluster.isPrimary ? warn : () => {});
  } catch (error) {
    console.error(`gatehouse: cannot prepare the database: ${describeFailure(error)}`);
    process.exit(1);
  }
}

/**
 * A command that reads or changes what a database holds refuses a SQLite path where there is none: made there, an
 * empty database (and a new secret.key) would answer as if every user were gone, after a typo in DATABASE_URL.
 */
function refuseMissingDatabaseFile(database: Config['database']): void {
  if (database.kind !== 'sqlite' || database.path === ':memory:') return;
  // An empty file (a `touch`, a copy that failed) holds no database either: SQLite would start one in it.
  const size = existsSync(database.path) ? statSync(database.path).size : undefined;
  if (size !== undefined && size > 0) return;
  throw new Error(
    `no database at ${database.path} (DATABASE_URL${size === 0 ? ': the file is empty' : ''}): check the path; ` +
      '`gatehouse migrate` creates a new one there',
  );
}

/**
 * The whole chain of causes, outermost first: a translated database error says what a client may be told, and the
 * operator needs the driver's own reason (connect ECONNREFUSED 127.0.0.1:5432) behind it.
 */
function describeFailure(error: unknown): string {
  const messages: string[] = [];
  let advice: string | undefined;
  for (let current = error; current !== undefined && messages.length < 5; ) {
    // An outage's "try again shortly" is no advice to an operator whose start failed: the cause below says what is
    // wrong, and for a database not created yet no wait would help.
    const outage = current instanceof AppError && current.code === 'service_unavailable' && current.cause;
    if (!outage) messages.push(current instanceof Error ? current.message : String(current));
    if ((current as { code?: unknown } | undefined)?.code === '3D000') {
      advice = 'create it first (`createdb NAME`, or `create database NAME` in psql), then start again';
    }
    current = current instanceof Error ? current.cause : undefined;
  }
  return messages.join(': ') + (advice ? `; ${advice}` : '');
}

/**
 * The METRICS_PORT listener, when configured: in a cluster only the primary listens, and asks every worker at each
 * scrape; otherwise the one server process does.
 */
async function listenForMetrics(config: Config, source: ScrapeSource): Promise<Server | undefined> {
  const { port, host } = config.metrics;
  if (port === undefined) return undefined;
  try {
    return await listenForScrapes(source, host, port);
  } catch (error) {
    console.error(
      `gatehouse: cannot listen on METRICS_HOST=${host} METRICS_PORT=${port}: ${(error as Error).message}`,
    );
    process.exit(1);
  }
}

function refuseToStart(error: unknown): never {
  console.error(`gatehouse: cannot start: ${describeFailure(error)}`);
  process.exit(1);
}

/** Asks on the terminal; false without asking when stdin is not one (a script must say --yes). */
async function confirmOnTerminal(question: string): Promise<boolean> {
  if (!process.stdin.isTTY) return false;
  const prompt = createInterface({ input: process.stdin, output: process.stderr });
  try {
    return /^y(es)?$/i.test((await prompt.question(question)).trim());
  } finally {
    prompt.close();
  }
}

/** The OS account running a command, named as the actor of what it changes in the audit trail. */
function operatingSystemUser(): string {
  try {
    return userInfo().username;
  } catch {
    return process.env.USER ?? process.env.LOGNAME ?? 'unknown';
  }
}

async function serve(config: Config): Promise<void> {
  const inCluster = cluster.isWorker;
  // A worker is stopped by a SIGTERM from the primary (or from a terminal, to the whole group), which may come while
  // it is still starting: remember it, and stop once it listens.
  let stopRequested = false;
  let stopNow: (() => void) | undefined;
  if (inCluster) {
    const requestStop = () => {
      stopRequested = true;
      stopNow?.();
    };
    process.on('SIGTERM', requestStop);
    process.on('SIGINT', requestStop);
  }
  const { handle, applied } = await prepareDatabase(config);
  const metricsWanted = config.metrics.token !== undefined || config.metrics.port !== undefined;
  // Each worker counts its own requests; the label keeps their series apart wherever they are scraped together.
  const metricsRegistry = metricsWanted
    ? createMetricsRegistry(cluster.worker ? { worker: String(cluster.worker.id) } : {})
    : undefined;
  // Before the app is built, so that the primary's scrapes find this worker answering as soon as it can.
  if (metricsRegistry && inCluster && config.metrics.port !== undefined)
    shareMetricsWithPrimary(metricsRegistry);
  const app = await buildApp(config, {
    db: handle,
    clock: systemClock,
    passwords: createPasswordHasher(config.passwords.argon2, config.hashing),
    ...(metricsRegistry ? { metricsRegistry } : {}),
  }).catch(refuseToStart);
  // Instances started together on one PostgreSQL database take turns under Kysely's advisory lock: the first applies
  // what is pending, the others find nothing left, and this line says which one did it.
  if (applied.length > 0) app.log.info({ migrations: applied }, 'applied database migrations');
  const metricsServer =
    metricsRegistry && !inCluster
      ? await listenForMetrics(config, scrapeRegistry(metricsRegistry))
      : undefined;
  // The hasher has started its first hash, so the threadpool's threads exist now.
  const notLowered = deprioritiseThreadpool(config.hashThreadPriority);
  if (notLowered)
    app.log.warn(`HASH_THREAD_PRIORITY=${config.hashThreadPriority} not fully applied: ${notLowered}`);

  const closeAppConnections = connectionCloser(app.server);
  const closeMetricsConnections = metricsServer && connectionCloser(metricsServer);
  let shuttingDown = false;
  // A worker may get its stop twice (the primary's and the one a terminal or systemd sends to the whole group);
  // close-with-grace would take the second as "exit now", so workers handle signals themselves.
  const closer = closeWithGrace(
    // The drain, then up to 10 s for the requests still running; past that the process exits 1.
    { delay: config.shutdownDrainMs + 10_000, ...(inCluster ? { skip: ['SIGTERM', 'SIGINT'] } : {}) },
    async ({ signal, err }) => {
      shuttingDown = true;
      if (err) app.log.error({ err }, 'shutting down after an error');
      else {
        app.log.info({ signal }, 'shutting down: draining requests');
        // Still listening: a client that was sending on an idle keep-alive connection, or that a load balancer sends
        // here before it notices /readyz, is answered (and told to close) instead of meeting a reset.
        app.startDraining();
        await sleep(config.shutdownDrainMs);
      }
      const closing = app.close();
      metricsServer?.close();
      // Connections that hold no request being answered would otherwise hold the process open: keep-alive sockets
      // whose request finished after close() began, and those that have not sent a whole request yet.
      const sweep = setInterval(() => {
        closeAppConnections();
        closeMetricsConnections?.();
      }, 50);
      await closing.finally(() => clearInterval(sweep));
      await handle.close();
    },
  );
  try {
    await app.listen({ host: config.host, port: config.port });
  } catch (error) {
    // A HOST that does not resolve or is not this machine's, a PORT taken: one line naming the setting, as for
    // METRICS_PORT, rather than a stack.
    console.error(
      `gatehouse: cannot listen on HOST=${config.host} PORT=${config.port}: ${(error as Error).message}`,
    );
    process.exit(1);
  }
  // PORT=0 asks for any free port: the one given is the one to say.
  const address = app.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : config.port;
  app.log.info(
    { database: config.database.kind, algorithm: config.jwt.algorithm, pid: process.pid },
    `Gatehouse listening on http://${config.host}:${port} (docs at /docs)`,
  );
  // Once per start: a cluster's later workers (and replacements of the first) stay quiet.
  if ((cluster.worker?.id ?? 1) === 1) {
    if (config.mail.smtpUrl === undefined) {
      app.log.info(
        'SMTP_URL is not set: mails stay in the outbox; read them with `npm run gatehouse -- mail list` and `mail show ID`',
      );
    }
    const cleartext = cleartextLinkWarning(config.mail);
    if (cleartext !== undefined) app.log.warn(cleartext);
  }
  if (inCluster) {
    stopNow = () => {
      if (!shuttingDown) void closer.close();
    };
    if (stopRequested) stopNow();
  }
}

/** The cluster's primary: migrates and creates the first key once, then keeps `workers` servers running. */
async function superviseWorkers(config: Config): Promise<void> {
  let stopping = false;
  let failedWhileStopping = false;
  const restarts = new Set<NodeJS.Timeout>();
  // Not dead, rather than listed: node:cluster keeps a worker that exited before its IPC channel closed in
  // cluster.workers until the disconnect, so the last worker's 'exit' could find itself still listed, and the primary
  // then waited for nothing (a stop that hung until killed, seen under load).
  const liveWorkers = () =>
    Object.values(cluster.workers ?? {}).filter(
      (worker): worker is Worker => worker !== undefined && !worker.isDead(),
    );
  // Installed first: a stop that arrives while the database is being prepared or workers are starting is honoured.
  const stop = () => {
    if (stopping) return;
    stopping = true;
    for (const timer of restarts) clearTimeout(timer);
    restarts.clear();
    // Each worker drains its requests and exits on its own; one still starting stops as soon as it listens, or
    // dies of the signal at once if it has not reached its handler yet.
    for (const worker of liveWorkers()) worker.process.kill('SIGTERM');
    if (liveWorkers().length === 0) process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);

  const { handle } = await prepareDatabase(config);
  await loadConfiguredKeyRing(config, handle, systemClock).catch(refuseToStart);
  await handle.close();
  if (stopping) process.exit(0);
  if (config.metrics.port !== undefined) await listenForMetrics(config, scrapeWorkers());

  // Round-robin (node:cluster's default): the primary accepts and passes each connection to the next worker, which
  // spreads load evenly. Its known limit: a connection passed to a worker in the instant it dies is not answered.
  const recentCrashes: number[] = [];
  // Workers take the primary's secrets, even from secret.key: a worker replaced after a `secret rotate` must still
  // derive the same refresh-token key as its siblings.
  const workerEnv = { GATEHOUSE_SECRET: config.secrets.join(',') };
  // Without Redis the workers count in this process, over IPC, so that a client cannot multiply its limits by the
  // number of workers its connections land on; with Redis they do while it is down.
  if (config.throttling.enabled) startClusterCounters();
  for (let i = 0; i < config.workers; i += 1) cluster.fork(workerEnv);
  cluster.on('exit', (worker, code, signal) => {
    if (stopping) {
      if (code !== 0 && signal !== 'SIGTERM') failedWhileStopping = true;
      if (liveWorkers().length === 0) process.exit(failedWhileStopping ? 1 : 0);
      return;
    }
    const now = Date.now();
    recentCrashes.push(now);
    while ((recentCrashes[0] ?? now) < now - 60_000) recentCrashes.shift();
    if (recentCrashes.length > 5 * config.workers) {
      console.error('gatehouse: workers keep exiting (more than 5 each in a minute); stopping');
      process.exit(1);
    }
    console.error(`gatehouse: worker ${worker.process.pid} exited (${signal ?? code}); starting another`);
    const timer = setTimeout(
      () => {
        restarts.delete(timer);
        if (!stopping) cluster.fork(workerEnv);
      },
      Math.min(5000, 200 * recentCrashes.length),
    );
    restarts.add(timer);
  });
}

const resolution = resolveCommandLine(process.argv.slice(2));
if (resolution.kind === 'help') {
  console.log(resolution.text);
  process.exit(0);
}
if (resolution.kind === 'usage') {
  console.error(resolution.message);
  console.error(resolution.help);
  process.exit(2);
}
if (resolution.kind === 'serve') {
  const { config } = resolveSecrets(readConfig());
  if (config.workers > 1 && cluster.isPrimary) await superviseWorkers(config);
  else await serve(config);
} else {
  const io: CommandIo = {
    print: (line) => console.log(line),
    warn: (line) => console.error(line),
    progress: (text) => process.stderr.write(text),
    isTerminal: process.stdout.isTTY === true,
    confirm: (question) => confirmOnTerminal(question),
    osUser: operatingSystemUser(),
  };
  try {
    // Also run by `npm ci` (prepare) as `version` with the compile cache on: every module is then already compiled at
    // the first `npm start`, which spares it Node's TypeScript stripper (about 18 MB of resident memory) and its
    // start-up time.
    process.exitCode = await runCommand(resolution, io, (command) => {
      const read = readConfig();
      if (!command.createsDatabase) refuseMissingDatabaseFile(read.database);
      const { config, source } = resolveSecrets(read);
      return { config, secretSource: source };
    });
  } catch (error) {
    console.error(`gatehouse ${resolution.command.name}: ${describeFailure(error)}`);
    process.exitCode = 1;
  }
}
