// The servers are other processes (npm and its node, the cluster's workers, PostgreSQL's backends), out of reach of
// process.cpuUsage: their CPU and memory are read from /proc, as the kernel counts them.
import { readdirSync, readFileSync } from 'node:fs';

/** The process and all its descendants: CPU ticks and resident memory from /proc. */
function processTree(pid: number): number[] {
  const parents = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      parents.set(Number(entry), Number(fields[1]));
    } catch {}
  }
  const tree = [pid];
  for (let i = 0; i < tree.length; i += 1) {
    for (const [child, parent] of parents) if (parent === tree[i]) tree.push(child);
  }
  return tree;
}

export function cpuMs(pid: number): number {
  const ticksPerSecond = 100;
  let ticks = 0;
  for (const member of processTree(pid)) {
    try {
      const stat = readFileSync(`/proc/${member}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {}
  }
  return (ticks * 1000) / ticksPerSecond;
}

/** CPU milliseconds of each PostgreSQL server process, by pid. */
export function postgresCpuMs(): Map<number, number> {
  const byPid = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (!stat.includes('(postgres)')) continue;
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      byPid.set(Number(entry), ((Number(fields[11]) + Number(fields[12])) * 1000) / 100);
    } catch {}
  }
  return byPid;
}

/** CPU spent between two readings by the processes alive at the second (a backend that ended is not counted). */
export function cpuBetween(before: Map<number, number>, after: Map<number, number>): number {
  let total = 0;
  for (const [pid, cpu] of after) total += cpu - (before.get(pid) ?? 0);
  return total;
}

/**
 * CPU milliseconds of every thread of the process and its descendants, summed by thread name; each process's first
 * thread counts as `main` (npm's, idle while the server works, included).
 */
export function threadCpuMs(pid: number): Map<string, number> {
  const byName = new Map<string, number>();
  for (const member of processTree(pid)) {
    try {
      for (const tid of readdirSync(`/proc/${member}/task`)) {
        const stat = readFileSync(`/proc/${member}/task/${tid}/stat`, 'utf8');
        const name =
          Number(tid) === member ? 'main' : stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        const ms = ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
        byName.set(name, (byName.get(name) ?? 0) + ms);
      }
    } catch {}
  }
  return byName;
}

export function rssMbPerProcess(pid: number): number {
  let largest = 0;
  for (const member of processTree(pid)) {
    try {
      const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${member}/status`, 'utf8'));
      largest = Math.max(largest, Number(match?.[1] ?? 0) / 1024);
    } catch {}
  }
  return largest;
}
