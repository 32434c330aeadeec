// node bench/memory.ts [--seconds N] [--rounds N] [--probe] [--env NAME=VALUE ...]
// Where the server's resident memory goes, issue 15: starts Gatehouse exactly as `npm run bench` does (npm start,
// the same environment), on SQLite then PostgreSQL, and reads the server process's VmRSS, RssAnon and RssFile from
// /proc at rest, after the first registration and login, and every 100 ms under GET /conversation (32 connections)
// then POST /token (8 connections), keeping each phase's peak. --probe preloads bench/support/memory-probe.ts to add
// V8's view (heap, new space, external); it changes what is measured a little, so compare runs with the same flags.
// --env passes a setting to the server's environment (and npm's), for trying one out before changing code.
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createBench, log } from './support/context.ts';
import { formHeaders, registerAndLogin, seedUsers, startGatehouse, tokenForm } from './support/gatehouse.ts';
import { load } from './support/load.ts';
import { withSeededPostgresDatabase } from './support/postgres.ts';
import { cpuMs } from './support/proc-stats.ts';
import { stop } from './support/processes.ts';

const args = process.argv.slice(2);
const option = (name: string, fallback: number) => {
  const index = args.indexOf(name);
  return index >= 0 ? Number(args[index + 1]) : fallback;
};
const seconds = option('--seconds', 10);
const rounds = option('--rounds', 1);
const probe = args.includes('--probe');
const extraEnv: Record<string, string> = {};
args.forEach((arg, index) => {
  if (arg !== '--env') return;
  const [name, ...value] = (args[index + 1] ?? '').split('=');
  if (name) extraEnv[name] = value.join('=');
});

interface Sample {
  rss: number;
  anon: number;
  file: number;
  heapTotal?: number;
  heapUsed?: number;
  newSpace?: number;
  external?: number;
}

const mb = (kb: number) => kb / 1024;

function status(pid: number): Sample {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string) => mb(Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(text)?.[1] ?? 0));
  return { rss: field('VmRSS'), anon: field('RssAnon'), file: field('RssFile') + field('RssShmem') };
}

/** npm runs `exec node … src/main.ts` in a shell: the server is npm's child. */
function serverPid(npmPid: number): number {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      const command = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (parent === npmPid && command.includes('src/main.ts')) return Number(entry);
    } catch {}
  }
  throw new Error(`no server process under npm ${npmPid}`);
}

function sample(pid: number, probeFile: string): Sample {
  const taken = status(pid);
  if (!probe) return taken;
  try {
    const seen = JSON.parse(readFileSync(probeFile, 'utf8'));
    return {
      ...taken,
      heapTotal: seen.heapTotal / 2 ** 20,
      heapUsed: seen.heapUsed / 2 ** 20,
      newSpace: (seen.spaces.new_space ?? 0) / 2 ** 20,
      external: seen.external / 2 ** 20,
    };
  } catch {
    return taken;
  }
}

/** The sample with the highest RSS while `during` runs. */
async function peakWhile<T>(pid: number, probeFile: string, during: Promise<T>) {
  let peak = sample(pid, probeFile);
  let done = false;
  const result = during.finally(() => {
    done = true;
  });
  while (!done) {
    await sleep(100);
    const now = sample(pid, probeFile);
    if (now.rss > peak.rss) peak = now;
  }
  return { peak, result: await result };
}

interface Line {
  what: string;
  sample: Sample;
  requestsPerSecond?: number;
  /** The server's CPU per request, steadier than req/s on a machine shared with other work. */
  cpuMsPerRequest?: number;
}

const bench = createBench(args);
const lines: Line[] = [];

async function measureServer(label: string, databaseUrl: string, round: number) {
  const probeFile = join(bench.work, `probe-${label}-${round}.json`);
  const env: Record<string, string> = { ...extraEnv };
  if (probe) {
    env.GATEHOUSE_MEMORY_PROBE = probeFile;
    env.NODE_OPTIONS = `${env.NODE_OPTIONS ?? process.env.NODE_OPTIONS ?? ''} --import=${join(bench.root, 'bench/support/memory-probe.ts')}`;
  }
  const server = await startGatehouse(bench, databaseUrl, env);
  try {
    const pid = serverPid(server.pid);
    await sleep(2000);
    lines.push({ what: `${label}: at rest after start`, sample: sample(pid, probeFile) });
    const auth = { authorization: `Bearer ${await registerAndLogin(server.base, 'benchuser')}` };
    await sleep(1000);
    lines.push({ what: `${label}: after one register and login`, sample: sample(pid, probeFile) });
    const cpuBefore = cpuMs(pid);
    const conversation = await peakWhile(
      pid,
      probeFile,
      load(bench, { url: `${server.base}/conversation`, headers: auth, duration: seconds }),
    );
    lines.push({
      what: `${label}: peak under GET /conversation`,
      sample: conversation.peak,
      requestsPerSecond: conversation.result.requests.average,
      cpuMsPerRequest: (cpuMs(pid) - cpuBefore) / (conversation.result.requests.total || 1),
    });
    const token = await peakWhile(
      pid,
      probeFile,
      load(bench, {
        url: `${server.base}/token`,
        method: 'POST',
        headers: formHeaders,
        body: tokenForm,
        connections: 8,
        duration: seconds,
      }),
    );
    lines.push({
      what: `${label}: peak under POST /token`,
      sample: token.peak,
      requestsPerSecond: token.result.requests.average,
    });
    await sleep(3000);
    lines.push({ what: `${label}: 3 s after the load`, sample: sample(pid, probeFile) });
  } finally {
    await stop(server.child);
  }
}

function print() {
  const header = ['what', 'RSS MB', 'anon MB', 'file MB', 'req/s', 'CPU ms/req'];
  if (probe) header.push('heap total', 'heap used', 'new space', 'external');
  const rows = lines.map((line) => {
    const cells = [
      line.what,
      line.sample.rss.toFixed(0),
      line.sample.anon.toFixed(0),
      line.sample.file.toFixed(0),
      line.requestsPerSecond === undefined ? '' : line.requestsPerSecond.toFixed(0),
      line.cpuMsPerRequest === undefined ? '' : line.cpuMsPerRequest.toFixed(3),
    ];
    if (probe) {
      for (const value of [
        line.sample.heapTotal,
        line.sample.heapUsed,
        line.sample.newSpace,
        line.sample.external,
      ])
        cells.push(value === undefined ? '' : value.toFixed(1));
    }
    return cells;
  });
  const widths = header.map((name, i) => Math.max(name.length, ...rows.map((row) => (row[i] ?? '').length)));
  const format = (cells: string[]) =>
    `| ${cells.map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0))).join(' | ')} |`;
  console.log(format(header));
  console.log(
    `| ${widths.map((width, i) => (i === 0 ? '-'.repeat(width) : `${'-'.repeat(width - 1)}:`)).join(' | ')} |`,
  );
  for (const row of rows) console.log(format(row));
}

try {
  log(`memory: ${seconds} s per load, ${rounds} round(s)${probe ? ', with the probe' : ''}`);
  for (let round = 1; round <= rounds; round += 1) {
    const suffix = rounds > 1 ? ` #${round}` : '';
    const sqliteUrl = `sqlite:${join(bench.work, `gatehouse-${round}.db`)}`;
    seedUsers(bench, sqliteUrl, 1000);
    await measureServer(`SQLite${suffix}`, sqliteUrl, round);
    await withSeededPostgresDatabase(bench, 1000, (url) => measureServer(`PostgreSQL${suffix}`, url, round));
  }
  print();
} finally {
  for (const child of bench.children) await stop(child);
  rmSync(bench.work, { recursive: true, force: true });
}
