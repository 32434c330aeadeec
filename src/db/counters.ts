import cluster from 'node:cluster';
import { Redis } from 'ioredis';
import {
  type RateLimiterAbstract,
  RateLimiterCluster,
  RateLimiterClusterMaster,
  RateLimiterMemory,
  RateLimiterRedis,
  RateLimiterRes,
} from 'rate-limiter-flexible';

/** A fixed window of `limit` events per key, and optionally how long a key that goes past it stays blocked. */
export interface CounterSpec {
  /** Unique per counter: it prefixes the counter's keys. */
  name: string;
  limit: number;
  windowSeconds: number;
  /** Going past the limit blocks the key this long (from then), instead of until the window ends. */
  blockSeconds?: number;
}

export interface CounterReading {
  /** The key's count after this event; past the spec's limit means refused. */
  count: number;
  /** Until the window ends or the block lifts. */
  msBeforeReset: number;
}

/** Atomic counters: concurrent hits on one key each see a different count. */
export interface Counter {
  hit(key: string): Promise<CounterReading>;
  /** Takes one event back (a reserved attempt that never happened). */
  refund(key: string): Promise<void>;
  /** Blocks the key for this long from now, whatever its count. */
  block(key: string, seconds: number): Promise<void>;
  reset(key: string): Promise<void>;
}

export interface CounterStore {
  /** Where the counts live: this process, the cluster's primary, or Redis. */
  readonly kind: 'memory' | 'cluster' | 'redis';
  counter(spec: CounterSpec): Counter;
  /**
   * Resolves true once the store answers (at once in memory), false when a shared store did not within the time: a
   * short-lived process (a command) must wait for it, since a counter used before then counts in this process alone.
   */
  reachable(timeoutMs: number): Promise<boolean>;
  close(): Promise<void>;
}

export interface CounterStoreOptions {
  redis?: { url: string; keyPrefix: string } | undefined;
  /** A shared store stopped answering (counting goes on in this process) or answers again. */
  onStoreStateChange?: (state: 'unreachable' | 'reachable', error?: unknown) => void;
}

// A Redis that hangs must not hold logins: past this a command fails over to the in-process count.
const REDIS_COMMAND_TIMEOUT_MS = 500;
const CLUSTER_TIMEOUT_MS = 2000;

/**
 * Opens the counters that throttling keeps: in Redis when configured (each counter insured by an in-process one
 * that takes over while Redis is unreachable: still limited, never failing open); else in the cluster's primary when
 * this is a worker (startClusterCounters must run there); else in this process.
 */
export function createCounterStore(options: CounterStoreOptions = {}): CounterStore {
  const notify = options.onStoreStateChange ?? (() => {});
  if (options.redis) return redisStore(options.redis.url, options.redis.keyPrefix, notify);
  if (cluster.isWorker) return clusterStore(notify);
  return {
    kind: 'memory',
    counter: (spec) => wrap(new RateLimiterMemory(inProcessOptions(spec)), undefined, IN_PROCESS),
    reachable: async () => true,
    close: async () => {},
  };
}

/** Makes this primary process hold the counters of its workers (node:cluster IPC): call it before forking. */
export function startClusterCounters(): void {
  new RateLimiterClusterMaster();
}

// In-process counters expire by a Node timer, which cannot wait longer than 2^31−1 ms (24.8 days): a longer window
// would fire at once and forget the key. Redis keeps the configured window.
const MAX_IN_PROCESS_SECONDS = 24 * 86400;

const limiterOptions = (spec: CounterSpec, prefix: string) => ({
  keyPrefix: `${prefix}${spec.name}`,
  points: spec.limit,
  duration: spec.windowSeconds,
  blockDuration: spec.blockSeconds ?? 0,
});

const inProcessOptions = (spec: CounterSpec) => ({
  ...limiterOptions(spec, ''),
  duration: Math.min(spec.windowSeconds, MAX_IN_PROCESS_SECONDS),
  blockDuration: Math.min(spec.blockSeconds ?? 0, MAX_IN_PROCESS_SECONDS),
});

function redisStore(
  url: string,
  keyPrefix: string,
  notify: NonNullable<CounterStoreOptions['onStoreStateChange']>,
): CounterStore {
  const client = new Redis(url, {
    // A command issued while disconnected fails at once (and the insurance counts) instead of queueing.
    enableOfflineQueue: false,
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: 0,
    commandTimeout: REDIS_COMMAND_TIMEOUT_MS,
    connectTimeout: 2000,
    retryStrategy: (attempt) => Math.min(attempt * 200, 2000),
  });
  let reachable = true;
  let closing = false;
  const lost = (error?: unknown) => {
    if (reachable && !closing) notify('unreachable', error);
    reachable = false;
  };
  // Without an 'error' listener ioredis would print every failed reconnection; one line per outage is enough.
  client.on('error', lost);
  client.on('close', () => lost(new Error('connection to Redis closed')));
  client.on('ready', () => {
    if (!reachable) notify('reachable');
    reachable = true;
  });
  return {
    kind: 'redis',
    counter(spec) {
      const insurance = new RateLimiterMemory(inProcessOptions(spec));
      const limiter = new RateLimiterRedis({
        ...limiterOptions(spec, keyPrefix),
        storeClient: client,
        rejectIfRedisNotReady: true,
        insuranceLimiter: insurance,
      });
      return wrap(limiter, insurance, IN_PROCESS);
    },
    reachable(timeoutMs) {
      if (client.status === 'ready') return Promise.resolve(true);
      return new Promise((resolve) => {
        const done = (answer: boolean) => {
          clearTimeout(timer);
          client.off('ready', ready);
          resolve(answer);
        };
        const ready = () => done(true);
        const timer = setTimeout(() => done(false), timeoutMs);
        client.once('ready', ready);
      });
    },
    async close() {
      closing = true;
      if (client.status === 'ready') await client.quit().catch(() => client.disconnect());
      else client.disconnect();
    },
  };
}

function clusterStore(notify: NonNullable<CounterStoreOptions['onStoreStateChange']>): CounterStore {
  let reachable = true;
  const health: StoreHealth = {
    failed(error) {
      if (reachable) notify('unreachable', error);
      reachable = false;
    },
    answered() {
      if (!reachable) notify('reachable');
      reachable = true;
    },
  };
  return {
    kind: 'cluster',
    counter(spec) {
      const limiter = new RateLimiterCluster({ ...inProcessOptions(spec), timeoutMs: CLUSTER_TIMEOUT_MS });
      return wrap(limiter, new RateLimiterMemory(inProcessOptions(spec)), health);
    },
    reachable: async () => reachable,
    close: async () => {},
  };
}

interface StoreHealth {
  failed(error: unknown): void;
  answered(): void;
}

const IN_PROCESS: StoreHealth = { failed: () => {}, answered: () => {} };

/** The library signals "over the limit" by rejecting with its result; anything else is the store failing. */
function wrap(
  limiter: RateLimiterAbstract,
  fallback: RateLimiterMemory | undefined,
  health: StoreHealth,
): Counter {
  const run = async <T>(operation: (target: RateLimiterAbstract) => Promise<T>): Promise<T> => {
    try {
      const result = await operation(limiter);
      health.answered();
      return result;
    } catch (error) {
      if (error instanceof RateLimiterRes) {
        health.answered();
        throw error;
      }
      if (!fallback) throw error;
      health.failed(error);
      return operation(fallback);
    }
  };
  return {
    async hit(key) {
      const result = await run((target) => target.consume(key)).catch((error: unknown) => {
        if (error instanceof RateLimiterRes) return error;
        throw error;
      });
      return { count: result.consumedPoints, msBeforeReset: Math.max(0, result.msBeforeNext) };
    },
    async refund(key) {
      await run((target) => target.reward(key));
    },
    async block(key, seconds) {
      await run((target) => target.block(key, seconds));
    },
    async reset(key) {
      await run((target) => target.delete(key));
    },
  };
}
