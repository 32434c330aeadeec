// node bench/flood-schedule.ts: /conversation's p99 at rest and under a /token flood (one server, 10 s each), with what
// the kernel says of the server's threads over each window: CPU run, time waiting for a core, involuntary switches.
// For work on how hashing shares the cores with the event loop (see README, "Reads keep a core"), where flood-only.ts
// is too coarse. Settings, all optional: CONNECTIONS (500), SERVER_ENV (JSON of extra server environment),
// FLOOD_BODY (the flooding form: a password grant of the bench user).
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createBench, log } from './support/context.ts';
import { formHeaders, registerAndLogin, startGatehouse, tokenForm } from './support/gatehouse.ts';
import { loadFromChildProcess, probeLatency } from './support/load.ts';
import { stop } from './support/processes.ts';

const connections = Number(process.env.CONNECTIONS ?? 500);
const serverEnv = JSON.parse(process.env.SERVER_ENV ?? '{}') as Record<string, string>;
const bench = createBench(process.argv.slice(2));

/** npm start's last descendant: the node process that serves. */
function serverPid(pid: number): number {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid)
        return serverPid(Number(entry));
    } catch {}
  }
  return pid;
}

/** Per thread name: [run ms, wait-for-a-core ms, involuntary switches], summed over the threads of that name. */
function schedule(pid: number): Map<string, number[]> {
  const byName = new Map<string, number[]>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const name =
        tid === String(pid) ? 'main' : readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      const [runNs = 0, waitNs = 0] = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8')
        .split(' ')
        .map(Number);
      const status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
      const involuntary = Number(/nonvoluntary_ctxt_switches:\s+(\d+)/.exec(status)?.[1] ?? 0);
      const [run = 0, wait = 0, preempted = 0] = byName.get(name) ?? [];
      byName.set(name, [run + runNs / 1e6, wait + waitNs / 1e6, preempted + involuntary]);
    } catch {}
  }
  return byName;
}

function threadSummary(before: Map<string, number[]>, after: Map<string, number[]>): string {
  return [...after]
    .map(([name, sums]) => [name, sums.map((value, i) => value - (before.get(name)?.[i] ?? 0))] as const)
    .filter(([, [run]]) => (run ?? 0) > 5)
    .map(
      ([name, [run, wait, involuntary]]) =>
        `${name} ran ${run?.toFixed(0)} ms, waited ${wait?.toFixed(0)} ms, ${involuntary} preempted`,
    )
    .join('; ');
}

try {
  const server = await startGatehouse(bench, `sqlite:${join(bench.work, 'gatehouse.db')}`, serverEnv);
  const pid = serverPid(server.pid);
  const url = `${server.base}/conversation`;
  const auth = { authorization: `Bearer ${await registerAndLogin(server.base, 'benchuser')}` };
  await probeLatency({ ...bench, seconds: 1 }, url, auth);
  let before = schedule(pid);
  const atRest = await probeLatency(bench, url, auth);
  log(
    `at rest: p50 ${atRest.p50Ms.toFixed(2)} ms, p99 ${atRest.p99Ms.toFixed(2)} ms, ${atRest.requests} reads; ${threadSummary(before, schedule(pid))}`,
  );
  before = schedule(pid);
  const [tokens, flooded] = await Promise.all([
    loadFromChildProcess(bench, {
      url: `${server.base}/token`,
      method: 'POST',
      headers: formHeaders,
      body: process.env.FLOOD_BODY ?? tokenForm,
      connections,
    }),
    probeLatency(bench, url, auth),
  ]);
  const statuses = Object.entries(
    (tokens as { statusCodeStats?: Record<string, { count: number }> }).statusCodeStats ?? {},
  ).map(([status, { count }]) => `${count} × ${status}`);
  log(
    `flooded by ${connections} connections: p50 ${flooded.p50Ms.toFixed(2)} ms, p99 ${flooded.p99Ms.toFixed(2)} ms, ` +
      `${flooded.requests} reads, /token ${statuses.join(', ')}; ${threadSummary(before, schedule(pid))}`,
  );
  log(`p99 flooded / at rest: ${(flooded.p99Ms / atRest.p99Ms).toFixed(2)}×`);
} finally {
  for (const child of bench.children) await stop(child);
  rmSync(bench.work, { recursive: true, force: true });
}
