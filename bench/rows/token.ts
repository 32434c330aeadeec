import { execFileSync } from 'node:child_process';
import { type Bench, log, type Row } from '../support/context.ts';
import {
  formHeaders,
  type RunningGatehouse,
  registerBody,
  startGatehouse,
  tokenForm,
} from '../support/gatehouse.ts';
import { measure } from '../support/load.ts';
import { stop } from '../support/processes.ts';

export interface Argon2Rate {
  workers: number;
  verifiesPerSecond: number;
  cpuMsPerVerify: number;
  before: number;
  after: number;
}

function rawArgon2(bench: Bench) {
  const output = execFileSync(process.execPath, ['bench/argon2-rate.ts', String(bench.seconds)], {
    cwd: bench.root,
  }).toString();
  const rate = JSON.parse(output) as { verifiesPerSecond: number; cpuMsPerVerify: number; workers: number };
  log(`argon2id raw: ${rate.verifiesPerSecond.toFixed(1)} verifies/s on ${rate.workers} cores`);
  return rate;
}

/** POST /token against raw argon2id, then POST /register/, on the SQLite server of the /conversation row. */
export async function tokenRows(
  bench: Bench,
  sqlite: RunningGatehouse,
  databaseUrl: string,
): Promise<{ token: Row; tokenThrottled: Row; register: Row; argon2: Argon2Rate }> {
  // The raw rate right before and right after the two /token rows, averaged: this machine's speed drifts by 10-20%
  // within minutes, and the target is a ratio of the two.
  const argon2Before = rawArgon2(bench);
  // Four connections, under R1's five free attempts: every attempt reserves its place before its hash, so with
  // throttling on a sixth concurrent login of one user from one address is refused, whatever its password
  // (THROTTLING.md's trade-off). Both rows use four, so that on and off differ only by the throttle.
  const logins = (name: string, server: RunningGatehouse, connections = 4) =>
    measure(bench, name, server.pid, {
      url: `${server.base}/token`,
      method: 'POST',
      headers: formHeaders,
      body: tokenForm,
      connections,
    });
  const token = await logins('Gatehouse POST /token, SQLite', sqlite);
  // The same logins with throttling on (the bench's servers run with RATE_LIMITS=off): the counters reserved and
  // cleared around every success are the cost. Per-address caps are lifted, since every request comes from here.
  const throttled = await startGatehouse(bench, databaseUrl, {
    RATE_LIMITS: 'on',
    TOKEN_PASSWORD_PER_IP: '9999999/60s',
    REGISTER_PER_IP: '9999999/60s',
  });
  const tokenThrottled = await logins('Gatehouse POST /token, SQLite, throttling on', throttled);
  await stop(throttled.child);
  const argon2After = rawArgon2(bench);
  const argon2 = {
    workers: argon2Before.workers,
    verifiesPerSecond: (argon2Before.verifiesPerSecond + argon2After.verifiesPerSecond) / 2,
    cpuMsPerVerify: (argon2Before.cpuMsPerVerify + argon2After.cpuMsPerVerify) / 2,
    before: argon2Before.verifiesPerSecond,
    after: argon2After.verifiesPerSecond,
  };
  bench.extra.argon2 = argon2;
  const register = await measure(bench, 'Gatehouse POST /register/, SQLite', sqlite.pid, {
    url: `${sqlite.base}/register/`,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    setupBody: registerBody,
    connections: 8,
  });
  return { token, tokenThrottled, register, argon2 };
}
