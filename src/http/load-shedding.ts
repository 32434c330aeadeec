import { getHeapStatistics } from 'node:v8';
import underPressure from '@fastify/under-pressure';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { AppError } from '../errors.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Answered even under pressure: health checks must tell a busy instance from a dead one. */
    neverShed?: boolean;
    /** Traffic that is mostly password hashing (password grants, sign-ups): it does not make hashing leave a core. */
    isMostlyHashing?: boolean;
  }
}

export interface PressureLimits {
  /** Mean event-loop delay, in milliseconds, over a sample interval. */
  maxEventLoopDelayMs: number;
  /** Share of a sample interval the event loop was busy; 0 turns this check off. */
  maxEventLoopUtilization: number;
  /** How often the delay, utilisation and heap are read; the delay is the mean of 10 ms probes over it. */
  sampleIntervalMs: number;
  /** Used V8 heap past which requests are shed; undefined turns this check off. */
  maxHeapUsedBytes?: number | undefined;
}

// Near V8's limit every allocation runs the collector and the process is about to die of heap exhaustion: shedding
// there lets the requests in flight finish and their garbage go instead.
const HEAP_GUARD_SHARE = 0.9;

/** Returns MAX_HEAP_USED_MB's limit in bytes: `auto` is 90% of this process's heap limit (--max-old-space-size). */
export function heapGuardBytes(setting: number | 'auto' | undefined): number | undefined {
  if (setting !== 'auto') return setting;
  return Math.floor(getHeapStatistics().heap_size_limit * HEAP_GUARD_SHARE);
}

/**
 * The outer guard: hashing is bounded by its own queue (security/passwords.ts), which @fastify/under-pressure cannot
 * see; this one catches what the queue does not, an event loop that no longer keeps up (and, set by MAX_HEAP_USED_MB,
 * a heap near its limit).
 */
export const PRESSURE_LIMITS: PressureLimits = {
  maxEventLoopDelayMs: 1000,
  // Off: a loop busy 98% of the time still answered GET /conversation in 3 ms at 9,000 requests a second (npm run
  // bench), and shedding there refused 80,000 requests that were being served well. Delay is the sign of a loop that
  // no longer keeps up.
  maxEventLoopUtilization: 0,
  sampleIntervalMs: 1000,
};

// How often the delay probe fires: its lateness is the loop's delay.
const PROBE_MS = 10;

/**
 * Measures the event loop's delay as the lateness of a 10 ms timer, averaged over each sample interval. Node's delay
 * monitor (perf_hooks' monitorEventLoopDelay, which under-pressure reads) recorded nothing of a one-second synchronous
 * stall on Node 24 here (its maximum stayed at 10 ms), so the guard could not see the very stall it is for.
 */
function createDelayProbe(sampleIntervalMs: number) {
  let last = performance.now();
  let intervalStart = last;
  let lateness = 0;
  let probes = 0;
  let meanDelayMs = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    lateness += Math.max(0, now - last - PROBE_MS);
    probes += 1;
    last = now;
    if (now - intervalStart >= sampleIntervalMs) {
      meanDelayMs = lateness / probes;
      lateness = 0;
      probes = 0;
      intervalStart = now;
    }
  }, PROBE_MS);
  timer.unref();
  return { meanDelayMs: () => meanDelayMs, stop: () => clearInterval(timer) };
}

const overloaded = (reason: string) =>
  new AppError('overloaded', 'The server is busy; retry in a second.', {
    cause: new Error(reason),
    retryAfterSeconds: 1,
    unavailableReason: 'overloaded',
  });

/**
 * Answers 503 + Retry-After through the error table (our body, our headers) while the event loop is overloaded; routes
 * marked `neverShed` still answer. Register after the hooks that set the standard headers.
 */
export async function registerLoadShedding(app: FastifyInstance, limits: PressureLimits): Promise<void> {
  // Start-up (schema compilation, migrations, the first hashes) blocks the loop, and the first samples would read it
  // as overload: measured, the first second after every start was shed. Pressure counts from the second full
  // interval after the app is ready.
  let measuring = false;
  app.addHook('onReady', async () => {
    setTimeout(() => {
      measuring = true;
    }, 2 * limits.sampleIntervalMs).unref();
  });
  const probe = createDelayProbe(limits.sampleIntervalMs);
  app.addHook('onClose', (_instance, done) => {
    probe.stop();
    done();
  });
  app.addHook('onRequest', (request, _reply, done) => {
    const delayMs = probe.meanDelayMs();
    if (measuring && delayMs > limits.maxEventLoopDelayMs && !request.routeOptions.config?.neverShed) {
      done(overloaded(`eventLoopDelay ${delayMs.toFixed(2)} over its limit`));
      return;
    }
    done();
  });
  await app.register(underPressure, {
    // The delay is the probe's (above); under-pressure keeps utilisation and the heap.
    maxEventLoopDelay: 0,
    maxEventLoopUtilization: limits.maxEventLoopUtilization,
    // 0 is under-pressure's "off".
    maxHeapUsedBytes: limits.maxHeapUsedBytes ?? 0,
    // The default, `cumulative`, averages since start: after a quiet day a saturated loop would take hours to count.
    eventLoopUtilizationMode: 'interval',
    sampleInterval: limits.sampleIntervalMs,
    pressureHandler: async (request: FastifyRequest, _reply, type, value) => {
      if (!measuring || request.routeOptions.config?.neverShed) return;
      throw overloaded(`${type} ${typeof value === 'number' ? value.toFixed(2) : value} over its limit`);
    },
  });
}

/**
 * Tells the hasher of every request that is not mostly hashing: while such requests keep coming, a login flood leaves
 * them a core (PasswordHasher.noteOtherWork).
 */
export function reportOtherWork(app: FastifyInstance, hasher: { noteOtherWork(): void }): void {
  app.addHook('onRequest', (request, _reply, done) => {
    if (!request.routeOptions.config?.isMostlyHashing) hasher.noteOtherWork();
    done();
  });
}
