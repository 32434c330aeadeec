import { type Bench, log } from '../support/context.ts';
import {
  formHeaders,
  registerAndLogin,
  startGatehouse,
  tokenForm,
  uniqueName,
} from '../support/gatehouse.ts';
import { loadFromChildProcess, probeLatency, probeLatencyAtRate } from '../support/load.ts';
import { stop } from '../support/processes.ts';
import type { SqliteGatehouse } from './conversation.ts';

export interface Flood {
  p50AtRestMs: number;
  p99AtRestMs: number;
  p50FloodedMs: number;
  p99FloodedMs: number;
  ratio: number;
  conversationErrors: number;
  tokenRequestsPerSecondDuringFlood: number;
  /** Flooding connections, and the share of their answers that were 503 (shed by the hash queue's bound). */
  floodConnections: number;
  tokenShedShare: number;
  /** /token's answers during the flood, by status: only 200, 400, 429 and 503 are expected. */
  tokenStatusCounts: Record<string, number>;
  /** The same comparison with /conversation requested at a steady rate (probeLatencyAtRate), where measured. */
  steady?: { perSecond: number; p99AtRestMs: number; p99FloodedMs: number; ratio: number; errors: number };
}

const STEADY_READS_PER_SECOND = 1000;

/** A probe at rest, then again while `connections` clients send the password grant as fast as they are answered. */
async function atRestThenFlooded<Probe>(
  bench: Bench,
  base: string,
  connections: number,
  probe: () => Promise<Probe>,
) {
  const atRest = await probe();
  const [tokens, flooded] = await Promise.all([
    loadFromChildProcess(bench, {
      url: `${base}/token`,
      method: 'POST',
      headers: formHeaders,
      body: tokenForm,
      connections,
    }),
    probe(),
  ]);
  return { atRest, flooded, tokens };
}

/** p99 of /conversation at a steady rate, at rest and while `connections` flood /token. */
async function measureFloodAtSteadyRate(
  bench: Bench,
  base: string,
  auth: Record<string, string>,
  connections: number,
): Promise<NonNullable<Flood['steady']>> {
  const { atRest, flooded } = await atRestThenFlooded(bench, base, connections, () =>
    probeLatencyAtRate(bench, `${base}/conversation`, auth, STEADY_READS_PER_SECOND),
  );
  log(
    `flood at a steady ${STEADY_READS_PER_SECOND} reads/s, ${connections} connections: p99 ` +
      `${atRest.p99Ms.toFixed(2)} ms at rest, ${flooded.p99Ms.toFixed(2)} ms flooded`,
  );
  return {
    perSecond: STEADY_READS_PER_SECOND,
    p99AtRestMs: atRest.p99Ms,
    p99FloodedMs: flooded.p99Ms,
    ratio: flooded.p99Ms / atRest.p99Ms,
    errors: atRest.errors + flooded.errors,
  };
}

/**
 * p99 of /conversation at rest and while 16 connections flood /token, timed per request in microseconds
 * (autocannon rounds to whole milliseconds, too coarse for a sub-millisecond path). The flood comes from another
 * process, as it would from other clients: the probe then times the server, not the load generator's event loop.
 */
async function measureFlood(
  bench: Bench,
  base: string,
  auth: Record<string, string>,
  label: string,
  connections = 16,
): Promise<Flood> {
  // A second of the probe first, as measure() warms its load: the first seconds of a cold probe (its own code not yet
  // optimised, in this process and in the server) raised the at-rest p99 of the first row by a third, and so lowered
  // its ratio (1.82-1.86 against 1.29-1.51 ms at rest, four runs of bench/flood-only.ts).
  await probeLatency({ ...bench, seconds: 1 }, `${base}/conversation`, auth);
  const { atRest, flooded, tokens } = await atRestThenFlooded(bench, base, connections, () =>
    probeLatency(bench, `${base}/conversation`, auth),
  );
  const statusCounts =
    (tokens as { statusCodeStats?: Record<string, { count: number }> }).statusCodeStats ?? {};
  const answered = Object.values(statusCounts).reduce((sum, { count }) => sum + count, 0);
  const tokenShedShare = answered ? (statusCounts['503']?.count ?? 0) / answered : 0;
  log(
    `flood, ${label}: p99 ${atRest.p99Ms.toFixed(2)} ms at rest, ${flooded.p99Ms.toFixed(2)} ms flooded, ` +
      `${(tokenShedShare * 100).toFixed(0)}% of /token shed`,
  );
  return {
    p50AtRestMs: atRest.p50Ms,
    p99AtRestMs: atRest.p99Ms,
    p50FloodedMs: flooded.p50Ms,
    p99FloodedMs: flooded.p99Ms,
    ratio: flooded.p99Ms / atRest.p99Ms,
    conversationErrors: atRest.errors + flooded.errors,
    tokenRequestsPerSecondDuringFlood: tokens.requests.average,
    floodConnections: connections,
    tokenShedShare,
    tokenStatusCounts: Object.fromEntries(
      Object.entries(statusCounts).map(([status, { count }]) => [status, count]),
    ),
  };
}

/** The last use of the SQLite server of the /conversation row: it is stopped before the second server starts. */
export async function floodRows(
  bench: Bench,
  sqlite: SqliteGatehouse,
): Promise<{ idle: Flood; overflow: Flood; low: Flood }> {
  // Logins must not slow everyone else down: p99 of /conversation at rest, then while /token is flooded.
  const idle = await measureFlood(
    bench,
    sqlite.server.base,
    sqlite.auth,
    'default HASH_THREAD_PRIORITY=idle',
  );
  bench.extra.flood = idle;
  // Far more logins than the hash queue holds (one slot and 16 places per core): the excess is answered 503 at once.
  const overflow = await measureFlood(
    bench,
    sqlite.server.base,
    sqlite.auth,
    'flooded beyond the hash queue',
    500,
  );
  overflow.steady = await measureFloodAtSteadyRate(bench, sqlite.server.base, sqlite.auth, 500);
  bench.extra.floodOverflow = overflow;
  await stop(sqlite.server.child);

  // The same with the hashing threads at nice 19 instead of SCHED_IDLE, for comparison.
  const server = await startGatehouse(bench, sqlite.url, { HASH_THREAD_PRIORITY: 'low' });
  const auth = { authorization: `Bearer ${await registerAndLogin(server.base, uniqueName())}` };
  const low = await measureFlood(bench, server.base, auth, 'HASH_THREAD_PRIORITY=low');
  bench.extra.floodLow = low;
  await stop(server.child);
  return { idle, overflow, low };
}
