import { execFile } from 'node:child_process';
import { Agent, request as httpRequest } from 'node:http';
import { createRequire } from 'node:module';
import autocannon from 'autocannon';
import { type Bench, log, type Row } from './context.ts';
import { cpuBetween, cpuMs, postgresCpuMs, rssMbPerProcess, threadCpuMs } from './proc-stats.ts';

export interface LoadOptions {
  url: string;
  method?: 'GET' | 'POST';
  headers?: Record<string, string>;
  body?: string;
  setupBody?: () => string;
  /** autocannon's request sequence, for requests that depend on earlier answers (a refresh token's successor). */
  requests?: autocannon.Request[];
  connections?: number;
  duration?: number;
}

export async function load(bench: Bench, options: LoadOptions) {
  return autocannon({
    url: options.url,
    method: options.method ?? 'GET',
    connections: options.connections ?? bench.connections,
    duration: options.duration ?? bench.seconds,
    headers: options.headers,
    ...(options.requests
      ? { requests: options.requests }
      : options.setupBody
        ? {
            requests: [
              {
                setupRequest: (request: autocannon.Request) => ({ ...request, body: options.setupBody?.() }),
              },
            ],
          }
        : options.body
          ? { body: options.body }
          : {}),
  });
}

/**
 * The same load from a child process: a flood of hundreds of connections keeps autocannon's event loop busy, and a
 * latency probe sharing that loop would time the load generator's own delays along with the server's.
 */
export async function loadFromChildProcess(bench: Bench, options: LoadOptions) {
  const cli = createRequire(import.meta.url).resolve('autocannon/autocannon.js');
  const args = [
    cli,
    '--json',
    '--connections',
    String(options.connections ?? bench.connections),
    '--duration',
    String(options.duration ?? bench.seconds),
    '--method',
    options.method ?? 'GET',
    ...Object.entries(options.headers ?? {}).flatMap(([name, value]) => ['--headers', `${name}=${value}`]),
    ...(options.body === undefined ? [] : ['--body', options.body]),
    options.url,
  ];
  const stdout = await new Promise<string>((resolve, reject) =>
    execFile(process.execPath, args, { maxBuffer: 64 * 1024 * 1024 }, (error, out) =>
      error ? reject(error) : resolve(out),
    ),
  );
  return JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as autocannon.Result;
}

/** Times GET requests on one keep-alive agent: 200s as samples, anything else as errors; the p50 and p99 at the end. */
function latencyRecorder(url: string, headers: Record<string, string>, maxSockets: number) {
  const agent = new Agent({ keepAlive: true, maxSockets });
  const samples: number[] = [];
  let errors = 0;
  const once = () =>
    new Promise<void>((done) => {
      const sentAt = performance.now();
      const request = httpRequest(url, { agent, headers }, (response) => {
        response.resume();
        response.on('end', () => {
          if (response.statusCode === 200) samples.push(performance.now() - sentAt);
          else errors += 1;
          done();
        });
      });
      request.on('error', () => {
        errors += 1;
        done();
      });
      request.end();
    });
  const finish = () => {
    agent.destroy();
    samples.sort((a, b) => a - b);
    const at = (share: number) =>
      samples[Math.min(samples.length - 1, Math.floor(samples.length * share))] ?? Number.NaN;
    return { p50Ms: at(0.5), p99Ms: at(0.99), errors, requests: samples.length };
  };
  return { once, finish };
}

/** Four clients in a closed loop on keep-alive connections, each request timed with the high-resolution clock. */
export async function probeLatency(bench: Bench, url: string, headers: Record<string, string>, clients = 4) {
  const recorder = latencyRecorder(url, headers, clients);
  const deadline = performance.now() + bench.seconds * 1000;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (performance.now() < deadline) await recorder.once();
    }),
  );
  return recorder.finish();
}

/**
 * Requests sent at a steady rate whatever the answers do (an open loop), each timed from its sending. A closed loop
 * like probeLatency's waits for each answer before the next request, so a stall of the server delays one request per
 * client and the rest of the stall goes unsampled; here every request due during a stall waits it out, as real users'
 * would, and the p99 counts them.
 */
export async function probeLatencyAtRate(
  bench: Bench,
  url: string,
  headers: Record<string, string>,
  perSecond = 1000,
) {
  const recorder = latencyRecorder(url, headers, 64);
  const pending: Promise<void>[] = [];
  const started = performance.now();
  const periodMs = 1000 / perSecond;
  while (performance.now() - started < bench.seconds * 1000) {
    const waitMs = started + pending.length * periodMs - performance.now();
    if (waitMs > 1) await new Promise((resolve) => setTimeout(resolve, waitMs - 0.5));
    else pending.push(recorder.once());
  }
  await Promise.all(pending);
  return recorder.finish();
}

export async function measure(
  bench: Bench,
  name: string,
  pid: number,
  options: LoadOptions,
  usesPostgres = false,
): Promise<Row> {
  await load(bench, { ...options, duration: 1 });
  const cpuBefore = cpuMs(pid);
  const threadsBefore = threadCpuMs(pid);
  const databaseBefore = usesPostgres ? postgresCpuMs() : new Map<number, number>();
  const result = await load(bench, options);
  const cpuAfter = cpuMs(pid);
  const threadsAfter = threadCpuMs(pid);
  const databaseAfter = usesPostgres ? postgresCpuMs() : new Map<number, number>();
  const total = result.requests.total || 1;
  const row: Row = {
    name,
    requestsPerSecond: result.requests.average,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    errors: result.errors + result.timeouts + result.non2xx,
    rssMb: rssMbPerProcess(pid),
    cpuMsPerRequest: (cpuAfter - cpuBefore) / total,
    ...(usesPostgres ? { databaseCpuMsPerRequest: cpuBetween(databaseBefore, databaseAfter) / total } : {}),
    cpuMsPerRequestByThread: Object.fromEntries(
      [...threadsAfter]
        .map(([name, ms]) => [name, (ms - (threadsBefore.get(name) ?? 0)) / total] as const)
        .filter(([, ms]) => ms > 0),
    ),
  };
  bench.rows.push(row);
  log(`${name}: ${row.requestsPerSecond.toFixed(0)} req/s, p99 ${row.p99Ms} ms, errors ${row.errors}`);
  return row;
}
