import { mkdirSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import type { Flood } from '../rows/flood.ts';
import type { RevocationCheck } from '../rows/revocation.ts';
import type { Argon2Rate } from '../rows/token.ts';
import { type Bench, log, type Row } from './context.ts';

/** The rows and figures the targets are computed from; the others are in the table and the JSON only. */
export interface Measured {
  stackLimit: Row;
  ceiling: Row;
  sqliteConversation: Row;
  postgresConversation: Row | undefined;
  seedConversation: Row | undefined;
  seedToken: Row | undefined;
  token: Row;
  tokenThrottled: Row;
  register: Row;
  refresh: Row;
  argon2: Argon2Rate;
  flood: Flood;
  floodOverflow: Flood;
  floodLow: Flood;
  revocation: RevocationCheck;
}

/** Prints the Markdown table and the targets, and writes them with every row and figure to bench/results/. */
export function report(bench: Bench, measured: Measured) {
  const { ceiling, argon2, flood, floodLow, revocation } = measured;
  const sqliteRow = measured.sqliteConversation;
  const postgresRow = measured.postgresConversation;
  const tokenRow = measured.token;
  const ratio = (a: number | undefined, b: number | undefined) => (a && b ? a / b : undefined);
  const targets = {
    sqliteVsStackLimitRps: ratio(sqliteRow.requestsPerSecond, measured.stackLimit.requestsPerSecond),
    sqliteVsCeilingRps: ratio(sqliteRow.requestsPerSecond, ceiling.requestsPerSecond),
    sqliteVsCeilingCpu: ratio(sqliteRow.cpuMsPerRequest, ceiling.cpuMsPerRequest),
    postgresVsCeilingRps: ratio(postgresRow?.requestsPerSecond, ceiling.requestsPerSecond),
    sqliteVsSeedRps: ratio(sqliteRow.requestsPerSecond, measured.seedConversation?.requestsPerSecond),
    postgresVsSeedRps: ratio(postgresRow?.requestsPerSecond, measured.seedConversation?.requestsPerSecond),
    tokenVsArgon2: ratio(tokenRow.requestsPerSecond, argon2.verifiesPerSecond),
    // Issue 15 sets the target with throttling on, as the server runs by default.
    tokenThrottledVsArgon2: ratio(measured.tokenThrottled.requestsPerSecond, argon2.verifiesPerSecond),
    tokenVsSeed: ratio(tokenRow.requestsPerSecond, measured.seedToken?.requestsPerSecond),
    floodP99Ratio: flood.ratio,
    floodP99RatioLow: floodLow.ratio,
    registerRps: measured.register.requestsPerSecond,
    throttlingOnVsOff: ratio(measured.tokenThrottled.requestsPerSecond, tokenRow.requestsPerSecond),
    throttlingCpuOnVsOff: ratio(measured.tokenThrottled.cpuMsPerRequest, tokenRow.cpuMsPerRequest),
    floodOverflowP99Ratio: measured.floodOverflow.ratio,
    floodOverflowShedShare: measured.floodOverflow.tokenShedShare,
    floodOverflowSteadyP99Ratio: measured.floodOverflow.steady?.ratio,
    // Keycloak's published sizing: 15 password logins and 120 refreshes per second per vCPU.
    loginsPerSecondPerCore: tokenRow.requestsPerSecond / availableParallelism(),
    refreshesPerSecondPerCore: measured.refresh.requestsPerSecond / availableParallelism(),
  };

  const fmt = (value: number, digits = 0) => value.toLocaleString('en-US', { maximumFractionDigits: digits });
  const lines = [
    `| what | req/s | p50 ms | p99 ms | errors | RSS MB | CPU ms/req | PostgreSQL CPU ms/req |`,
    `|---|---:|---:|---:|---:|---:|---:|---:|`,
    ...bench.rows.map(
      (row) =>
        `| ${row.name} | ${fmt(row.requestsPerSecond)} | ${row.p50Ms} | ${row.p99Ms} | ${row.errors} | ${fmt(row.rssMb)} | ${fmt(row.cpuMsPerRequest, 3)} | ${row.databaseCpuMsPerRequest === undefined ? '' : fmt(row.databaseCpuMsPerRequest, 3)} |`,
    ),
    `| raw argon2id verify, ${argon2.workers} cores | ${fmt(argon2.verifiesPerSecond, 1)} | | | | | | |`,
  ];
  const show = (value: number | undefined, digits = 2) =>
    value === undefined ? 'n/a' : `${value.toFixed(digits)}×`;
  const summary = [
    '',
    `- /conversation SQLite vs stack limit (bare node:http, same JSON): ${show(targets.sqliteVsStackLimitRps)} req/s (target ≥ 0.5×)`,
    `- /conversation SQLite vs ceiling: ${show(targets.sqliteVsCeilingRps)} req/s (target ≥ 0.8×), CPU/req ${show(targets.sqliteVsCeilingCpu)} (target ≤ 1.25×)`,
    `- /conversation PostgreSQL vs ceiling: ${show(targets.postgresVsCeilingRps)} (target ≥ 0.6×)`,
    `- /token with throttling on vs off: CPU per login ${show(targets.throttlingCpuOnVsOff)} (target ≤ 1.05×: the throttle costs at most 5% of a login), logins/s ${show(targets.throttlingOnVsOff)} (4 connections each)`,
    `- /token flooded by ${measured.floodOverflow.floodConnections} connections, beyond the hash queue: ${(targets.floodOverflowShedShare * 100).toFixed(0)}% answered 503 (past 50 a second, each held a second); /conversation p99 ${measured.floodOverflow.p99FloodedMs.toFixed(2)} ms vs ${measured.floodOverflow.p99AtRestMs.toFixed(2)} ms at rest = ${show(targets.floodOverflowP99Ratio)} (target ≤ 3×)`,
    ...(measured.floodOverflow.steady
      ? [
          `- the same flood with /conversation requested at a steady ${measured.floodOverflow.steady.perSecond}/s (an open loop: requests due during a stall wait it out and count): p99 ${measured.floodOverflow.steady.p99FloodedMs.toFixed(2)} ms vs ${measured.floodOverflow.steady.p99AtRestMs.toFixed(2)} ms at rest = ${show(measured.floodOverflow.steady.ratio)}`,
        ]
      : []),
    `- per core: ${fmt(targets.loginsPerSecondPerCore, 1)} password logins/s and ${fmt(targets.refreshesPerSecondPerCore)} refreshes/s (Keycloak's sizing guide: 15 and 120 per vCPU)`,
    `- /conversation vs FastAPI seed: SQLite ${show(targets.sqliteVsSeedRps, 1)}, PostgreSQL ${show(targets.postgresVsSeedRps, 1)} (target ≥ 10×)`,
    `- /token vs raw argon2id: ${show(targets.tokenThrottledVsArgon2)} with throttling on (target ≥ 0.9×), ${show(targets.tokenVsArgon2)} with it off (raw ${argon2.before.toFixed(1)}/s before and ${argon2.after.toFixed(1)}/s after the two /token rows); vs seed ${show(targets.tokenVsSeed, 1)} (target ≥ 30×)`,
    `- revocation check (session joined into the user lookup, SQLite): ${revocation.extraCpuUsPerRequest.toFixed(1)} µs CPU per request = ${(revocation.shareOfConversationCpu * 100).toFixed(1)}% of /conversation's CPU (target ≤ 10%)`,
    `- /conversation p99 while /token is flooded: ${flood.p99FloodedMs.toFixed(2)} ms vs ${flood.p99AtRestMs.toFixed(2)} ms at rest = ${show(targets.floodP99Ratio)} (target ≤ 3×)`,
    `- the same with HASH_THREAD_PRIORITY=low (nice 19 instead of SCHED_IDLE): ${floodLow.p99FloodedMs.toFixed(2)} ms vs ${floodLow.p99AtRestMs.toFixed(2)} ms at rest = ${show(targets.floodP99RatioLow)}`,
  ];
  const byThread = (row: Row | undefined) =>
    Object.entries(row?.cpuMsPerRequestByThread ?? {})
      .sort(([, a], [, b]) => b - a)
      .map(([name, ms]) => `${name} ${ms.toFixed(3)}`)
      .join(', ');
  summary.push(
    `- /token CPU ms per login by thread: ${byThread(tokenRow)}; raw argon2id: ${argon2.cpuMsPerVerify.toFixed(3)} ms CPU per verify`,
    `- /conversation CPU ms per request by thread: SQLite ${byThread(sqliteRow)}; PostgreSQL ${byThread(postgresRow)} (+ ${postgresRow?.databaseCpuMsPerRequest?.toFixed(3) ?? 'n/a'} in PostgreSQL); ceiling ${byThread(ceiling)}`,
  );
  const table = [...lines, ...summary].join('\n');
  console.log(table);

  // Date and minute (UTC): a second run of the day must not overwrite the first.
  const stamp = new Date().toISOString().slice(0, 16).replace('T', '-').replace(':', '');
  mkdirSync(join(bench.root, 'bench/results'), { recursive: true });
  const file = join(bench.root, 'bench/results', `${bench.quick ? 'quick-' : ''}${stamp}.json`);
  writeFileSync(
    file,
    `${JSON.stringify(
      {
        date: new Date().toISOString(),
        quick: bench.quick,
        seconds: bench.seconds,
        connections: bench.connections,
        cores: availableParallelism(),
        extraUsers: bench.extraUsers,
        rows: bench.rows,
        extra: bench.extra,
        targets,
      },
      null,
      2,
    )}\n`,
  );
  log(`wrote ${file}`);
}
