import { execFileSync } from 'node:child_process';
import { type Bench, log, type Row } from '../support/context.ts';
import { formHeaders, type RunningGatehouse, registerBody, tokenForm } from '../support/gatehouse.ts';
import { measure } from '../support/load.ts';

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
): Promise<{ token: Row; register: Row; argon2: Argon2Rate }> {
  // The raw rate right before and right after /token, averaged: this machine's speed drifts by 10-20% within
  // minutes, and the target is a ratio of the two.
  const argon2Before = rawArgon2(bench);
  const token = await measure(bench, 'Gatehouse POST /token, SQLite', sqlite.pid, {
    url: `${sqlite.base}/token`,
    method: 'POST',
    headers: formHeaders,
    body: tokenForm,
    connections: 8,
  });
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
  return { token, register, argon2 };
}
