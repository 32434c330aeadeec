// npm run bench [-- --quick] [-- --users N]
// Measures, in one run on this machine: the ceiling (bare node:http + jose), Gatehouse on SQLite and PostgreSQL,
// raw argon2id, Gatehouse /token and /register, /conversation while /token is flooded, two workers, and the
// FastAPI seed when its Debian packages are installed. Prints a Markdown table and writes bench/results/.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { createBench, log, type Row } from './support/context.ts';
import {
  formHeaders,
  registerAndLogin,
  registerBody,
  seedUsers,
  startGatehouse,
  tokenForm,
  uniqueName,
} from './support/gatehouse.ts';
import { load, measure, probeLatency } from './support/load.ts';
import { createPostgresDatabase, postgresBytesPerUser } from './support/postgres.ts';
import { freePort, start, stop, waitFor } from './support/processes.ts';

const bench = createBench(process.argv.slice(2));
const { root, quick, seconds, connections, extraUsers, work, rows, extra } = bench;

/**
 * p99 of /conversation at rest and while 16 connections flood /token, timed per request in microseconds
 * (autocannon rounds to whole milliseconds, too coarse for a sub-millisecond path).
 */
async function measureFlood(base: string, auth: Record<string, string>, label: string) {
  const atRest = await probeLatency(bench, `${base}/conversation`, auth);
  const [tokens, flooded] = await Promise.all([
    load(bench, {
      url: `${base}/token`,
      method: 'POST',
      headers: formHeaders,
      body: tokenForm,
      connections: 16,
    }),
    probeLatency(bench, `${base}/conversation`, auth),
  ]);
  log(`flood, ${label}: p99 ${atRest.p99Ms.toFixed(2)} ms at rest, ${flooded.p99Ms.toFixed(2)} ms flooded`);
  return {
    p50AtRestMs: atRest.p50Ms,
    p99AtRestMs: atRest.p99Ms,
    p50FloodedMs: flooded.p50Ms,
    p99FloodedMs: flooded.p99Ms,
    ratio: flooded.p99Ms / atRest.p99Ms,
    conversationErrors: atRest.errors + flooded.errors,
    tokenRequestsPerSecondDuringFlood: tokens.requests.average,
  };
}

async function benchLargeDatabase(databaseUrl: string, label: string) {
  const server = await startGatehouse(bench, databaseUrl);
  const token = await registerAndLogin(server.base, 'benchuser');
  const users = extraUsers.toLocaleString('en-US');
  const usesPostgres = databaseUrl.startsWith('postgres');
  await measure(
    bench,
    `Gatehouse GET /conversation, ${label}, ${users} users`,
    server.pid,
    { url: `${server.base}/conversation`, headers: { authorization: `Bearer ${token}` } },
    usesPostgres,
  );
  await measure(
    bench,
    `Gatehouse POST /token, ${label}, ${users} users`,
    server.pid,
    { url: `${server.base}/token`, method: 'POST', headers: formHeaders, body: tokenForm, connections: 8 },
    usesPostgres,
  );
  await stop(server.child);
}

async function benchCeiling() {
  const { publicKey, privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid: 'ceiling', alg: 'EdDSA' };
  const now = Math.floor(Date.now() / 1000);
  const token = await new SignJWT({ preferred_username: 'benchuser', sid: 'x', scope: 'conversation' })
    .setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: 'ceiling' })
    .setIssuer('http://localhost:8000')
    .setAudience('gatehouse')
    .setSubject('1')
    .setIssuedAt(now)
    .setExpirationTime(now + 900)
    .setJti('ceiling')
    .sign(privateKey);
  const port = await freePort();
  const server = start(bench, process.execPath, ['bench/ceiling.ts'], {
    PORT: String(port),
    CEILING_PUBLIC_JWK: JSON.stringify(jwk),
    CEILING_ISSUER: 'http://localhost:8000',
    CEILING_AUDIENCE: 'gatehouse',
  });
  const url = `http://127.0.0.1:${port}/conversation`;
  await waitFor(url);
  const row = await measure(bench, 'Ceiling: node:http + jose verify', server.child.pid as number, {
    url,
    headers: { authorization: `Bearer ${token}` },
  });
  await stop(server.child);
  return row;
}

async function benchArgon2() {
  const output = execFileSync(process.execPath, ['bench/argon2-rate.ts', String(seconds)], {
    cwd: root,
  }).toString();
  const rate = JSON.parse(output) as { verifiesPerSecond: number; cpuMsPerVerify: number; workers: number };
  log(`argon2id raw: ${rate.verifiesPerSecond.toFixed(1)} verifies/s on ${rate.workers} cores`);
  return rate;
}

function seedAvailable(): string | undefined {
  const runSh = resolve(root, '../shared/reference-fastapi/run.sh');
  if (!existsSync(runSh)) return undefined;
  try {
    execFileSync(
      '/usr/bin/python3',
      ['-c', 'import fastapi, uvicorn, jose, passlib, sqlalchemy, multipart'],
      {
        stdio: 'ignore',
      },
    );
    return runSh;
  } catch {
    return undefined;
  }
}

async function main() {
  log(
    `${quick ? 'quick' : 'full'} run, ${seconds} s per measurement, ${connections} connections, ${availableParallelism()} cores`,
  );
  const ceiling = await benchCeiling();

  const sqliteUrl = `sqlite:${join(work, 'gatehouse.db')}`;
  seedUsers(bench, sqliteUrl, 1000);
  const sqlite = await startGatehouse(bench, sqliteUrl);
  const sqliteToken = await registerAndLogin(sqlite.base, 'benchuser');
  const auth = { authorization: `Bearer ${sqliteToken}` };
  const sqliteRow = await measure(bench, 'Gatehouse GET /conversation, SQLite', sqlite.pid, {
    url: `${sqlite.base}/conversation`,
    headers: auth,
  });

  // The three /conversation rows that the targets compare with the ceiling and the seed are measured next to
  // each other, since this machine's speed drifts within minutes.
  let postgresRow: Row | undefined;
  const postgres = await createPostgresDatabase(bench);
  if (postgres) {
    try {
      seedUsers(bench, postgres.url, 1000);
      const server = await startGatehouse(bench, postgres.url);
      const token = await registerAndLogin(server.base, 'benchuser');
      postgresRow = await measure(
        bench,
        'Gatehouse GET /conversation, PostgreSQL',
        server.pid,
        { url: `${server.base}/conversation`, headers: { authorization: `Bearer ${token}` } },
        true,
      );
      await measure(
        bench,
        'Gatehouse POST /token, PostgreSQL',
        server.pid,
        {
          url: `${server.base}/token`,
          method: 'POST',
          headers: formHeaders,
          body: tokenForm,
          connections: 8,
        },
        true,
      );
      await stop(server.child);
    } finally {
      await postgres.drop();
    }
  }

  let seedConversation: Row | undefined;
  let seedToken: Row | undefined;
  const seedScript = seedAvailable();
  if (seedScript) {
    const port = await freePort();
    const seed = start(bench, 'bash', [seedScript, String(port)], { TMPDIR: work });
    const base = `http://127.0.0.1:${port}`;
    await waitFor(`${base}/docs`);
    const token = await registerAndLogin(base, 'benchuser');
    seedConversation = await measure(bench, 'FastAPI seed GET /conversation', seed.child.pid as number, {
      url: `${base}/conversation`,
      headers: { authorization: `Bearer ${token}` },
    });
    seedToken = await measure(bench, 'FastAPI seed POST /token', seed.child.pid as number, {
      url: `${base}/token`,
      method: 'POST',
      headers: formHeaders,
      body: tokenForm,
      connections: 8,
    });
    await measure(bench, 'FastAPI seed POST /register/', seed.child.pid as number, {
      url: `${base}/register/`,
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      setupBody: registerBody,
      connections: 8,
    });
    await stop(seed.child);
  } else {
    log(
      'FastAPI seed skipped: ../shared/reference-fastapi or its Debian packages are missing (see its README)',
    );
  }

  // The raw rate right before and right after /token, averaged: this machine's speed drifts by 10-20% within
  // minutes, and the target is a ratio of the two.
  const argon2Before = await benchArgon2();
  const tokenRow = await measure(bench, 'Gatehouse POST /token, SQLite', sqlite.pid, {
    url: `${sqlite.base}/token`,
    method: 'POST',
    headers: formHeaders,
    body: tokenForm,
    connections: 8,
  });
  const argon2After = await benchArgon2();
  const argon2 = {
    workers: argon2Before.workers,
    verifiesPerSecond: (argon2Before.verifiesPerSecond + argon2After.verifiesPerSecond) / 2,
    cpuMsPerVerify: (argon2Before.cpuMsPerVerify + argon2After.cpuMsPerVerify) / 2,
    before: argon2Before.verifiesPerSecond,
    after: argon2After.verifiesPerSecond,
  };
  extra.argon2 = argon2;
  const registerRow = await measure(bench, 'Gatehouse POST /register/, SQLite', sqlite.pid, {
    url: `${sqlite.base}/register/`,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    setupBody: registerBody,
    connections: 8,
  });

  // Logins must not slow everyone else down: p99 of /conversation at rest, then while /token is flooded.
  extra.flood = await measureFlood(sqlite.base, auth, 'default HASH_THREAD_PRIORITY=idle');
  await stop(sqlite.child);

  // The same with the hashing threads at nice 19 instead of SCHED_IDLE, for comparison.
  const low = await startGatehouse(bench, sqliteUrl, { HASH_THREAD_PRIORITY: 'low' });
  const lowAuth = { authorization: `Bearer ${await registerAndLogin(low.base, uniqueName())}` };
  extra.floodLow = await measureFlood(low.base, lowAuth, 'HASH_THREAD_PRIORITY=low');
  await stop(low.child);

  const clustered = await startGatehouse(bench, sqliteUrl, { WORKERS: '2' });
  const clusteredToken = await registerAndLogin(clustered.base, uniqueName());
  await measure(bench, 'Gatehouse GET /conversation, SQLite, WORKERS=2', clustered.pid, {
    url: `${clustered.base}/conversation`,
    headers: { authorization: `Bearer ${clusteredToken}` },
  });
  await stop(clustered.child);

  // Issue 4's revocation check: its extra CPU per request against the whole request's CPU.
  const revocation = JSON.parse(
    execFileSync(process.execPath, ['bench/revocation-check.ts', sqliteUrl, quick ? '5000' : '20000'], {
      cwd: root,
    }).toString(),
  ) as { userLookupCpuUs: number; userAndSessionCpuUs: number };
  extra.revocationCheck = {
    ...revocation,
    extraCpuUsPerRequest: revocation.userAndSessionCpuUs - revocation.userLookupCpuUs,
    shareOfConversationCpu:
      (revocation.userAndSessionCpuUs - revocation.userLookupCpuUs) / (sqliteRow.cpuMsPerRequest * 1000),
  };

  // The same two paths with a large user table: the indexes, not the table size, must decide their cost.
  if (extraUsers > 0) {
    const bigSqlite = `sqlite:${join(work, 'gatehouse-large.db')}`;
    seedUsers(bench, bigSqlite, extraUsers);
    await benchLargeDatabase(bigSqlite, 'SQLite');
    const bigPostgres = await createPostgresDatabase(bench);
    if (bigPostgres) {
      try {
        seedUsers(bench, bigPostgres.url, extraUsers);
        await benchLargeDatabase(bigPostgres.url, 'PostgreSQL');
        extra.postgresBytesPerUser = await postgresBytesPerUser(bigPostgres.url, extraUsers);
      } finally {
        await bigPostgres.drop();
      }
    }
    extra.sqliteBytesPerUser = statSync(join(work, 'gatehouse-large.db')).size / extraUsers;
  }

  const ratio = (a: number | undefined, b: number | undefined) => (a && b ? a / b : undefined);
  const targets = {
    sqliteVsCeilingRps: ratio(sqliteRow.requestsPerSecond, ceiling.requestsPerSecond),
    sqliteVsCeilingCpu: ratio(sqliteRow.cpuMsPerRequest, ceiling.cpuMsPerRequest),
    postgresVsCeilingRps: ratio(postgresRow?.requestsPerSecond, ceiling.requestsPerSecond),
    sqliteVsSeedRps: ratio(sqliteRow.requestsPerSecond, seedConversation?.requestsPerSecond),
    postgresVsSeedRps: ratio(postgresRow?.requestsPerSecond, seedConversation?.requestsPerSecond),
    tokenVsArgon2: ratio(tokenRow.requestsPerSecond, argon2.verifiesPerSecond),
    tokenVsSeed: ratio(tokenRow.requestsPerSecond, seedToken?.requestsPerSecond),
    floodP99Ratio: (extra.flood as { ratio: number }).ratio,
    floodP99RatioLow: (extra.floodLow as { ratio: number }).ratio,
    registerRps: registerRow.requestsPerSecond,
  };

  const fmt = (value: number, digits = 0) => value.toLocaleString('en-US', { maximumFractionDigits: digits });
  const lines = [
    `| what | req/s | p50 ms | p99 ms | errors | RSS MB | CPU ms/req | PostgreSQL CPU ms/req |`,
    `|---|---:|---:|---:|---:|---:|---:|---:|`,
    ...rows.map(
      (row) =>
        `| ${row.name} | ${fmt(row.requestsPerSecond)} | ${row.p50Ms} | ${row.p99Ms} | ${row.errors} | ${fmt(row.rssMb)} | ${fmt(row.cpuMsPerRequest, 3)} | ${row.databaseCpuMsPerRequest === undefined ? '' : fmt(row.databaseCpuMsPerRequest, 3)} |`,
    ),
    `| raw argon2id verify, ${argon2.workers} cores | ${fmt(argon2.verifiesPerSecond, 1)} | | | | | | |`,
  ];
  const show = (value: number | undefined, digits = 2) =>
    value === undefined ? 'n/a' : `${value.toFixed(digits)}×`;
  const summary = [
    '',
    `- /conversation SQLite vs ceiling: ${show(targets.sqliteVsCeilingRps)} req/s (target ≥ 0.8×), CPU/req ${show(targets.sqliteVsCeilingCpu)} (target ≤ 1.25×)`,
    `- /conversation PostgreSQL vs ceiling: ${show(targets.postgresVsCeilingRps)} (target ≥ 0.6×)`,
    `- /conversation vs FastAPI seed: SQLite ${show(targets.sqliteVsSeedRps, 1)}, PostgreSQL ${show(targets.postgresVsSeedRps, 1)} (target ≥ 10×)`,
    `- /token vs raw argon2id: ${show(targets.tokenVsArgon2)} (target ≥ 0.9×; raw ${argon2.before.toFixed(1)}/s before and ${argon2.after.toFixed(1)}/s after the /token row); vs seed ${show(targets.tokenVsSeed, 1)} (target ≥ 30×)`,
    `- revocation check (session joined into the user lookup, SQLite): ${(extra.revocationCheck as { extraCpuUsPerRequest: number }).extraCpuUsPerRequest.toFixed(1)} µs CPU per request = ${((extra.revocationCheck as { shareOfConversationCpu: number }).shareOfConversationCpu * 100).toFixed(1)}% of /conversation's CPU (target ≤ 10%)`,
    `- /conversation p99 while /token is flooded: ${(extra.flood as { p99FloodedMs: number }).p99FloodedMs.toFixed(2)} ms vs ${(extra.flood as { p99AtRestMs: number }).p99AtRestMs.toFixed(2)} ms at rest = ${show(targets.floodP99Ratio)} (target ≤ 3×)`,
    `- the same with HASH_THREAD_PRIORITY=low (nice 19 instead of SCHED_IDLE): ${(extra.floodLow as { p99FloodedMs: number }).p99FloodedMs.toFixed(2)} ms vs ${(extra.floodLow as { p99AtRestMs: number }).p99AtRestMs.toFixed(2)} ms at rest = ${show(targets.floodP99RatioLow)}`,
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

  const date = new Date().toISOString().slice(0, 10);
  mkdirSync(join(root, 'bench/results'), { recursive: true });
  const file = join(root, 'bench/results', `${quick ? 'quick-' : ''}${date}.json`);
  writeFileSync(
    file,
    `${JSON.stringify(
      {
        date: new Date().toISOString(),
        quick,
        seconds,
        connections,
        cores: availableParallelism(),
        extraUsers,
        rows,
        extra,
        targets,
      },
      null,
      2,
    )}\n`,
  );
  log(`wrote ${file}`);
}

try {
  await main();
} finally {
  for (const child of bench.children) await stop(child);
  rmSync(work, { recursive: true, force: true });
}
