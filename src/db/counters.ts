import cluster from 'node:cluster';
import { createRequire } from 'node:module';
import type { Redis as RedisClient } from 'ioredis';
import {
  type RateLimiterAbstract,
  RateLimiterCluster,
  RateLimiterClusterMaster,
  RateLimiterRes,
} from 'rate-limiter-flexible';

const require = createRequire(import.meta.url);

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
  /**
   * Takes one event back (a reserved attempt that never happened), unless the key is past its limit: a count held
   * there is a lock (see block), which only its time or a reset ends.
   */
  refund(key: string): Promise<void>;
  /** Blocks the key for this long from now, whatever its count. */
  block(key: string, seconds: number): Promise<void>;
  reset(key: string): Promise<void>;
}

export interface CounterStore {
  /** Where the counts live: this process, the cluster's primary, or Redis. */
  readonly kind: 'memory' | 'cluster' | 'redis';
  counter(spec: CounterSpec): Counter;
  /** Returns how many keys this process holds (its own counts, or the insurance of a shared store). */
  heldKeys(): number;
  /**
   * Resolves once a shared store is connected or known to be unreachable (at most its connection timeout): true when
   * it answers (at once in memory). A short-lived process (a command) must wait for it, since a counter used before
   * then counts in this process alone.
   */
  ready(): Promise<boolean>;
  close(): Promise<void>;
}

export interface CounterStoreOptions {
  redis?: { url: string; keyPrefix: string } | undefined;
  /** A shared store stopped answering (counting goes on in this process) or answers again. */
  onStoreStateChange?: (state: 'unreachable' | 'reachable', error?: unknown) => void;
}

// A Redis that hangs must not hold logins: past this a command fails over to the in-process count, and Redis is not
// asked again until it answers a PING.
const REDIS_COMMAND_TIMEOUT_MS = 250;
const REDIS_PROBE_INTERVAL_MS = 1000;
const REDIS_CONNECT_TIMEOUT_MS = 2000;
const CLUSTER_TIMEOUT_MS = 2000;

/**
 * Opens the counters that throttling keeps: in Redis when configured (each counter insured by an in-process one
 * that takes over while Redis is unreachable: still limited, never failing open); else in the cluster's primary when
 * this is a worker (startClusterCounters must run there); else in this process.
 */
export function createCounterStore(options: CounterStoreOptions = {}): CounterStore {
  const notify = options.onStoreStateChange ?? (() => {});
  const local = createLocalCounts();
  if (options.redis) {
    // A worker's own memory would let a client multiply every limit by the number of workers while Redis is down:
    // its insurance counts in the primary too (startClusterCounters must run there).
    const outage = cluster.isWorker ? clusterStore(createLocalCounts(), () => {}) : undefined;
    return redisStore(options.redis.url, options.redis.keyPrefix, local, notify, outage);
  }
  if (cluster.isWorker) return clusterStore(local, notify);
  return {
    kind: 'memory',
    counter: (spec) => asCounter(local.counter(spec)),
    heldKeys: local.size,
    ready: async () => true,
    close: async () => local.close(),
  };
}

/** Makes this primary process hold the counters of its workers (node:cluster IPC): call it before forking. */
export function startClusterCounters(): void {
  new RateLimiterClusterMaster();
}

// The cluster's primary counts with rate-limiter-flexible's memory limiter, whose keys expire by a Node timer, which
// cannot wait longer than 2^31−1 ms (24.8 days): a longer window would fire at once and forget the key.
const MAX_CLUSTER_SECONDS = 24 * 86400;

/** A fixed window's count in this process. */
interface LocalCounter {
  hit(key: string): CounterReading;
  /** Takes the count a shared store gave, so that it is known here if that store stops answering. */
  copy(key: string, reading: CounterReading): void;
  refund(key: string): void;
  block(key: string, seconds: number): void;
  reset(key: string): void;
}

interface LocalCounts {
  counter(spec: CounterSpec): LocalCounter;
  /** Keys held, those whose window has ended dropped first. */
  size(): number;
  /** Forgets every count. */
  clear(): void;
  close(): void;
}

interface Entry {
  count: number;
  endsAtMs: number;
}

// Expired keys nobody asks about again (a sprayed username, an address seen once) are dropped by a sweep that visits
// at most this many keys a second: memory follows the attempts of the last window, and no tick holds the loop long.
const SWEEP_INTERVAL_MS = 1000;
const SWEEP_BATCH = 10_000;

/**
 * Counts in this process: one map for every counter, a key dropped when its window ends (met again, or swept) and
 * when refunds bring it to nothing. No timer per key, so a window may be longer than Node's timers allow.
 */
function createLocalCounts(): LocalCounts {
  const entries = new Map<string, Entry>();
  const live = (key: string, now: number): Entry | undefined => {
    const entry = entries.get(key);
    if (entry && entry.endsAtMs <= now) {
      entries.delete(key);
      return undefined;
    }
    return entry;
  };
  const sweep = (batch: number) => {
    const now = Date.now();
    let visited = 0;
    for (const [key, entry] of entries) {
      if (entry.endsAtMs <= now) entries.delete(key);
      visited += 1;
      if (visited >= batch) return;
    }
  };
  // A fresh iteration each tick starts at the oldest keys, which are the first to expire.
  const sweeper = setInterval(() => sweep(SWEEP_BATCH), SWEEP_INTERVAL_MS);
  sweeper.unref();
  return {
    clear: () => entries.clear(),
    counter(spec) {
      const windowMs = spec.windowSeconds * 1000;
      const blockMs = (spec.blockSeconds ?? 0) * 1000;
      return {
        hit(key) {
          const now = Date.now();
          const name = `${spec.name}:${key}`;
          let entry = live(name, now);
          if (entry) entry.count += 1;
          else {
            entry = { count: 1, endsAtMs: now + windowMs };
            entries.set(name, entry);
          }
          // Blocked from the hit that first goes past the limit.
          if (blockMs > 0 && entry.count === spec.limit + 1) entry.endsAtMs = now + blockMs;
          return { count: entry.count, msBeforeReset: entry.endsAtMs - now };
        },
        copy(key, reading) {
          entries.set(`${spec.name}:${key}`, {
            count: reading.count,
            endsAtMs: Date.now() + reading.msBeforeReset,
          });
        },
        refund(key) {
          const name = `${spec.name}:${key}`;
          // A window that has ended took its count with it: nothing to give back, and nothing to carry below zero
          // into the next one.
          const entry = live(name, Date.now());
          if (!entry || entry.count > spec.limit) return;
          entry.count -= 1;
          if (entry.count <= 0) entries.delete(name);
        },
        block(key, seconds) {
          entries.set(`${spec.name}:${key}`, {
            count: spec.limit + 1,
            endsAtMs: Date.now() + seconds * 1000,
          });
        },
        reset(key) {
          entries.delete(`${spec.name}:${key}`);
        },
      };
    },
    size() {
      sweep(Number.POSITIVE_INFINITY);
      return entries.size;
    },
    close: () => clearInterval(sweeper),
  };
}

const asCounter = (local: LocalCounter): Counter => ({
  hit: async (key) => local.hit(key),
  refund: async (key) => local.refund(key),
  block: async (key, seconds) => local.block(key, seconds),
  reset: async (key) => local.reset(key),
});

const clusterOptions = (spec: CounterSpec) => ({
  keyPrefix: spec.name,
  points: spec.limit,
  duration: Math.min(spec.windowSeconds, MAX_CLUSTER_SECONDS),
  blockDuration: Math.min(spec.blockSeconds ?? 0, MAX_CLUSTER_SECONDS),
});

// Atomic per key. A hit opens the window at the first event and blocks at the first past the limit; a refund never
// creates a key (a window that ended took its count with it) and deletes one it brings to nothing.
const HIT_SCRIPT = `
local count = redis.call('incr', KEYS[1])
local ttl = redis.call('pttl', KEYS[1])
if count == 1 or ttl < 0 then
  redis.call('pexpire', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
if tonumber(ARGV[3]) > 0 and count == tonumber(ARGV[2]) + 1 then
  redis.call('pexpire', KEYS[1], ARGV[3])
  ttl = tonumber(ARGV[3])
end
return {count, ttl}`;
const REFUND_SCRIPT = `
local held = tonumber(redis.call('get', KEYS[1]))
if held == nil then return 0 end
if held > tonumber(ARGV[1]) then return held end
local count = redis.call('decr', KEYS[1])
if count <= 0 then redis.call('del', KEYS[1]) end
return count`;

interface CounterCommands {
  gatehouseHit(key: string, windowMs: number, limit: number, blockMs: number): Promise<[number, number]>;
  gatehouseRefund(key: string, limit: number): Promise<number>;
}

function redisStore(
  url: string,
  keyPrefix: string,
  local: LocalCounts,
  notify: NonNullable<CounterStoreOptions['onStoreStateChange']>,
  outage?: CounterStore,
): CounterStore {
  // Required here rather than imported: a server without REDIS_URL never holds ioredis (2 MB of heap).
  const { Redis }: { Redis: typeof RedisClient } = require('ioredis');
  const client = new Redis(url, {
    // A command issued while disconnected fails at once (and the process counts) instead of queueing.
    enableOfflineQueue: false,
    autoResendUnfulfilledCommands: false,
    maxRetriesPerRequest: 0,
    connectTimeout: REDIS_CONNECT_TIMEOUT_MS,
    retryStrategy: (attempt) => Math.min(attempt * 200, 2000),
  });
  client.defineCommand('gatehouseHit', { numberOfKeys: 1, lua: HIT_SCRIPT });
  client.defineCommand('gatehouseRefund', { numberOfKeys: 1, lua: REFUND_SCRIPT });
  const commands = client as unknown as CounterCommands;
  // Not ioredis's commandTimeout: its timer runs in the timers phase, before the poll phase reads an answer that came
  // during a stall of the event loop, so a loop busy past the timeout took a Redis that had answered in time for one
  // that hangs (and moved the counting into this process). Here an expired timer lets the loop read what arrived
  // first, and only a command still unanswered then has timed out.
  const afterTimeoutAndIo = (then: () => void) =>
    setTimeout(() => setImmediate(then), REDIS_COMMAND_TIMEOUT_MS);
  // A rejection after the answer settled the promise changes nothing.
  const answeredInTime = <T>(command: Promise<T>): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const timer = afterTimeoutAndIo(() =>
        reject(new Error(`Redis did not answer within ${REDIS_COMMAND_TIMEOUT_MS} ms`)),
      );
      command.then(resolve, reject).finally(() => clearTimeout(timer));
    });
  let closing = false;
  let probe: NodeJS.Timeout | undefined;
  // Redis refused to select the URL's database (an index past its `databases`): the connection is to database 0,
  // another deployment's perhaps, so nothing is sent on it, ever; the process counts alone, as in an outage.
  let wrongDatabase = false;
  const recovered = () => {
    if (probe === undefined || wrongDatabase) return;
    clearInterval(probe);
    probe = undefined;
    // A worker's own outage counts are stale once Redis decides again: a success another worker answered cannot clear
    // them, and they came back at the next outage (the primary's are cleared key by key with Redis's).
    if (outage) local.clear();
    notify('reachable');
  };
  const health: StoreHealth = {
    // Nothing is sent while the connection is not ready (it would fail at once) or after a command went unanswered:
    // a Redis that accepts and never answers would otherwise cost every request the command timeout, several times
    // over. A PING each interval tells when it answers again; a new connection says so by becoming ready.
    isAvailable: () => probe === undefined && !wrongDatabase && client.status === 'ready',
    failed(error) {
      if (probe !== undefined || closing) return;
      notify('unreachable', error);
      probe = setInterval(
        () =>
          answeredInTime(client.ping()).then(recovered, () => {
            // Unanswered on a connection that is up: it went silent, and a new one may be answered where it is not.
            if (client.status === 'ready') client.disconnect(true);
          }),
        REDIS_PROBE_INTERVAL_MS,
      );
      probe.unref();
    },
    answered() {},
  };
  // Without an 'error' listener ioredis would print every failed reconnection; one line per outage is enough.
  client.on('error', (error) => {
    // Only the index itself: another refusal of the SELECT (BUSY, NOAUTH) is an outage like any other.
    if (
      (error as { command?: { name?: string } }).command?.name === 'select' &&
      /DB index is out of range|invalid DB index/i.test(error.message)
    ) {
      if (wrongDatabase) return;
      health.failed(
        new Error(
          `REDIS_URL names a database this Redis refused to select (${error.message}): counting in this process only, until REDIS_URL is fixed`,
        ),
      );
      wrongDatabase = true;
      return;
    }
    health.failed(error);
  });
  client.on('close', () => health.failed(new Error('connection to Redis closed')));
  client.on('ready', recovered);
  // A server that accepts the connection and never answers leaves the client short of 'ready' (its first command gets
  // no answer), which no command's timeout would tell, since none is sent before it.
  // Nor would the client ever leave it: it waits on that connection for good, though a new one might be answered (a
  // proxy or a network fault holding the old one), so it is dropped for the next attempt of the retry strategy.
  client.on('connect', () => {
    afterTimeoutAndIo(() => {
      if (client.status !== 'connect') return;
      health.failed(
        new Error(`Redis accepted the connection but did not answer within ${REDIS_COMMAND_TIMEOUT_MS} ms`),
      );
      if (!closing) client.disconnect(true);
    }).unref();
  });
  return {
    kind: 'redis',
    counter(spec) {
      const key = (name: string) => `${keyPrefix}${spec.name}:${name}`;
      const windowMs = spec.windowSeconds * 1000;
      const blockMs = (spec.blockSeconds ?? 0) * 1000;
      const remote: Counter = {
        async hit(name) {
          const [count, ttl] = await answeredInTime(
            commands.gatehouseHit(key(name), windowMs, spec.limit, blockMs),
          );
          return { count, msBeforeReset: Math.max(0, ttl) };
        },
        async refund(name) {
          await answeredInTime(commands.gatehouseRefund(key(name), spec.limit));
        },
        async block(name, seconds) {
          await answeredInTime(client.set(key(name), spec.limit + 1, 'PX', seconds * 1000));
        },
        async reset(name) {
          await answeredInTime(client.del(key(name)));
        },
      };
      return insure(remote, local.counter(spec), health, outage?.counter(spec));
    },
    heldKeys: local.size,
    ready: () =>
      new Promise<boolean>((resolve) => {
        const answers = () => client.status === 'ready' && probe === undefined;
        if (client.status === 'ready' || probe !== undefined) return resolve(answers());
        const settled = () => {
          clearTimeout(timer);
          client.off('ready', settled).off('error', settled);
          resolve(answers());
        };
        const timer = setTimeout(settled, REDIS_CONNECT_TIMEOUT_MS);
        client.once('ready', settled).once('error', settled);
      }),
    async close() {
      closing = true;
      clearInterval(probe);
      local.close();
      await outage?.close();
      if (client.status === 'ready') await answeredInTime(client.quit()).catch(() => client.disconnect());
      else client.disconnect();
    },
  };
}

function clusterStore(
  local: LocalCounts,
  notify: NonNullable<CounterStoreOptions['onStoreStateChange']>,
): CounterStore {
  let reachable = true;
  const health: StoreHealth = {
    isAvailable: () => true,
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
      const limiter = new RateLimiterCluster({ ...clusterOptions(spec), timeoutMs: CLUSTER_TIMEOUT_MS });
      return insure(fromLimiter(limiter, spec.limit), local.counter(spec), health);
    },
    heldKeys: local.size,
    ready: async () => reachable,
    close: async () => local.close(),
  };
}

interface StoreHealth {
  /** Whether the shared store is worth asking now. */
  isAvailable(): boolean;
  failed(error: unknown): void;
  answered(): void;
}

/**
 * Counts in the shared store while it answers, in this process when it fails or is known to be down. What the shared
 * store answers is copied here as well: when it stops answering, this process goes on from the counts and locks it
 * saw (those that other instances alone saw are lost), not from nothing. `alsoMeanwhile`, in a cluster's worker,
 * counts the outage in the primary besides: a hit is refused when either count is past the limit, so the workers
 * share one limit from the outage on.
 */
function insure(
  remote: Counter,
  fallback: LocalCounter,
  health: StoreHealth,
  alsoMeanwhile?: Counter,
): Counter {
  const run = async <T>(
    shared: () => Promise<T>,
    locally: () => T | Promise<T>,
    copy: (result: T) => void,
  ): Promise<T> => {
    if (health.isAvailable()) {
      try {
        const result = await shared();
        health.answered();
        copy(result);
        return result;
      } catch (error) {
        health.failed(error);
      }
    }
    return locally();
  };
  return {
    hit: (key) =>
      run(
        () => remote.hit(key),
        async () => {
          const own = fallback.hit(key);
          if (!alsoMeanwhile) return own;
          const shared = await alsoMeanwhile.hit(key);
          return shared.count > own.count ? shared : own;
        },
        (reading) => fallback.copy(key, reading),
      ),
    refund: (key) => {
      const copy = () => fallback.refund(key);
      const locally = async () => {
        copy();
        await alsoMeanwhile?.refund(key);
      };
      return run(() => remote.refund(key), locally, copy);
    },
    block: (key, seconds) => {
      const copy = () => fallback.block(key, seconds);
      const locally = async () => {
        copy();
        await alsoMeanwhile?.block(key, seconds);
      };
      return run(() => remote.block(key, seconds), locally, copy);
    },
    reset: (key) => {
      const copy = () => {
        fallback.reset(key);
        // What the primary counted during an earlier outage must not come back at the next one (a success, an unlock,
        // a password change clear it); not waited for, since Redis has answered.
        alsoMeanwhile?.reset(key).catch(() => {});
      };
      const locally = async () => {
        fallback.reset(key);
        await alsoMeanwhile?.reset(key);
      };
      return run(() => remote.reset(key), locally, copy);
    },
  };
}

/** A rate-limiter-flexible limiter as a Counter; it signals "over the limit" by rejecting with its result. */
function fromLimiter(limiter: RateLimiterAbstract, limit: number): Counter {
  return {
    async hit(key) {
      const result = await limiter.consume(key).catch((error: unknown) => {
        if (error instanceof RateLimiterRes) return error;
        throw error;
      });
      return { count: result.consumedPoints, msBeforeReset: Math.max(0, result.msBeforeNext) };
    },
    async refund(key) {
      // Read, then given back: a hit between the two may make the refund lower a lock by one, at worst.
      const held = await limiter.get(key);
      if (held !== null && held.consumedPoints > limit) return;
      const result = await limiter.reward(key);
      // The limiter neither deletes a key refunded to nothing nor refuses to refund one whose window ended (it starts
      // a window below zero): delete both. A hit between the two calls may be lost, one count at worst.
      if (result.consumedPoints <= 0) await limiter.delete(key);
    },
    async block(key, seconds) {
      await limiter.block(key, seconds);
    },
    async reset(key) {
      await limiter.delete(key);
    },
  };
}
