// What one run shares between its rows: the command line, the children to stop and the directory to remove when
// it ends, and the rows and extra figures in the order they were measured (the order of the table and the JSON).
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface Row {
  name: string;
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  rssMb: number;
  cpuMsPerRequest: number;
  /** CPU of the PostgreSQL server processes per request, for the rows that use it. */
  databaseCpuMsPerRequest?: number;
  /**
   * The server process's CPU per request by thread: `main` (the event loop), `libuv-worker` (the threadpool: password
   * hashes, WebCrypto), and V8's and Node's helper threads (garbage collection, compilation) under their own names.
   */
  cpuMsPerRequestByThread?: Record<string, number>;
  note?: string;
}

export interface Bench {
  readonly root: string;
  readonly quick: boolean;
  readonly seconds: number;
  readonly connections: number;
  readonly extraUsers: number;
  readonly postgresAdminUrl: string;
  readonly secret: string;
  readonly work: string;
  readonly children: ChildProcess[];
  readonly rows: Row[];
  readonly extra: Record<string, unknown>;
}

export function createBench(args: string[]): Bench {
  const quick = args.includes('--quick');
  const usersIndex = args.indexOf('--users');
  return {
    root: resolve(dirname(fileURLToPath(import.meta.url)), '../..'),
    quick,
    // Quick runs exist so that the bench never rots (CI runs one): one second a row proves every row still runs.
    seconds: quick ? 1 : 10,
    connections: 32,
    extraUsers: usersIndex >= 0 ? Number(args[usersIndex + 1]) : 0,
    postgresAdminUrl: process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test',
    // Required with PostgreSQL; one for the whole run, so that seed-users and the servers open the same keys.
    secret: process.env.GATEHOUSE_SECRET ?? randomBytes(32).toString('base64url'),
    work: mkdtempSync(join(tmpdir(), 'gatehouse-bench-')),
    children: [],
    rows: [],
    extra: {},
  };
}

export function log(line: string) {
  process.stderr.write(`bench: ${line}\n`);
}
