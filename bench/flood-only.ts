// node bench/flood-only.ts [--quick]: only the flood rows of npm run bench (/conversation's p99 at rest and while
// /token is flooded by 16 and by 500 connections), for work on load shedding without a full six-minute run.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { floodRows } from './rows/flood.ts';
import { createBench, log } from './support/context.ts';
import { registerAndLogin, startGatehouse } from './support/gatehouse.ts';
import { stop } from './support/processes.ts';

const bench = createBench(process.argv.slice(2));
try {
  const url = `sqlite:${join(bench.work, 'gatehouse.db')}`;
  const server = await startGatehouse(bench, url);
  const auth = { authorization: `Bearer ${await registerAndLogin(server.base, 'benchuser')}` };
  const { idle, overflow, low } = await floodRows(bench, { url, server, auth });
  for (const [name, flood] of Object.entries({ idle, overflow, low })) {
    log(
      `${name}: ${flood.floodConnections} connections, p99 ${flood.p99AtRestMs.toFixed(2)} ms at rest, ` +
        `${flood.p99FloodedMs.toFixed(2)} ms flooded = ${flood.ratio.toFixed(2)}×, ` +
        `${flood.tokenRequestsPerSecondDuringFlood.toFixed(0)} /token req/s, ${(flood.tokenShedShare * 100).toFixed(0)}% shed, statuses ${JSON.stringify(flood.tokenStatusCounts)}`,
    );
    if (flood.steady) {
      log(
        `${name}, at a steady ${flood.steady.perSecond} reads/s: p99 ${flood.steady.p99AtRestMs.toFixed(2)} ms at rest, ` +
          `${flood.steady.p99FloodedMs.toFixed(2)} ms flooded = ${flood.steady.ratio.toFixed(2)}×`,
      );
    }
  }
} finally {
  for (const child of bench.children) await stop(child);
  rmSync(bench.work, { recursive: true, force: true });
}
