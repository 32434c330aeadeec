/**
 * A PostgreSQL cluster of the test's own, on a free port and in a temporary directory, that the test may stop and
 * start: the shared cluster on 5432 serves the suites running beside it and must never be stopped. As root (CI), the
 * cluster runs as the `postgres` user, since initdb refuses root.
 */
import { execFile, execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { getFreePort } from './server.ts';

const run = promisify(execFile);
const COMMAND_TIMEOUT_MS = 30_000;

export interface PrivatePostgres {
  port: number;
  /** The URL of a database in this cluster, as the `postgres` superuser (trust authentication, loopback only). */
  url(database: string): string;
  createDatabase(name: string): Promise<void>;
  /** Stops the server: `immediate` drops every connection at once, as a crash would. */
  stop(mode: 'immediate' | 'fast'): Promise<void>;
  start(): Promise<void>;
  isRunning(): boolean;
  /** Stops the server if it runs and removes its directory. */
  destroy(): Promise<void>;
  /** The server's own log, for failure messages. */
  log(): string;
}

/** The newest installed PostgreSQL's programs: pg_config's, else the highest version under /usr/lib/postgresql. */
function binDirectory(): string {
  const candidates: string[] = [];
  try {
    candidates.push(execFileSync('pg_config', ['--bindir'], { encoding: 'utf8' }).trim());
  } catch {
    // pg_config is optional (libpq-dev)
  }
  const root = '/usr/lib/postgresql';
  if (existsSync(root)) {
    const versions = readdirSync(root).sort((a, b) => Number(b) - Number(a));
    candidates.push(...versions.map((version) => path.join(root, version, 'bin')));
  }
  const found = candidates.find((dir) => existsSync(path.join(dir, 'initdb')));
  if (!found) throw new Error(`no PostgreSQL server programs (initdb) in ${candidates.join(', ') || root}`);
  return found;
}

/** initdb and postgres refuse to run as root: then run them as `postgres`. */
function asClusterOwner(): {
  wrap(program: string, args: string[]): [string, string[]];
  uid?: number;
  gid?: number;
} {
  if (process.getuid?.() !== 0) return { wrap: (program, args) => [program, args] };
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
  return { wrap: (program, args) => ['runuser', ['-u', 'postgres', '--', program, ...args]], uid, gid };
}

export async function startPrivatePostgres(): Promise<PrivatePostgres> {
  const bin = binDirectory();
  const owner = asClusterOwner();
  const root = mkdtempSync(path.join(os.tmpdir(), 'gh_pg_'));
  if (owner.uid !== undefined && owner.gid !== undefined) chownSync(root, owner.uid, owner.gid);
  const data = path.join(root, 'data');
  const logFile = path.join(root, 'server.log');
  const port = await getFreePort();
  let running = false;

  const exec = async (program: string, args: string[]) => {
    const [file, argv] = owner.wrap(path.join(bin, program), args);
    await run(file, argv, { timeout: COMMAND_TIMEOUT_MS, cwd: root });
  };
  const pgCtl = (args: string[]) => exec('pg_ctl', ['-D', data, '-w', '-t', '20', ...args]);
  const serverOptions = [
    `-p ${port}`,
    `-k ${root}`,
    '-c listen_addresses=127.0.0.1',
    // A throw-away cluster: durability costs time and buys nothing here.
    '-c fsync=off',
    '-c synchronous_commit=off',
    '-c full_page_writes=off',
  ].join(' ');

  // If the test process dies without its afterAll, the server must not outlive it.
  const stopOnExit = () => {
    if (!running) return;
    try {
      const [file, argv] = owner.wrap(path.join(bin, 'pg_ctl'), ['-D', data, '-m', 'immediate', 'stop']);
      execFileSync(file, argv, { timeout: 10_000, stdio: 'ignore' });
    } catch {
      // nothing more to do on the way out
    }
    rmSync(root, { recursive: true, force: true });
  };
  process.once('exit', stopOnExit);

  const cluster: PrivatePostgres = {
    port,
    url: (database) => `postgres://postgres@127.0.0.1:${port}/${database}`,
    async createDatabase(name) {
      const client = new pg.Client({
        connectionString: cluster.url('postgres'),
        connectionTimeoutMillis: 5000,
      });
      await client.connect();
      try {
        await client.query(`CREATE DATABASE ${name}`);
      } finally {
        await client.end();
      }
    },
    async stop(mode) {
      await pgCtl(['-m', mode, 'stop']);
      running = false;
    },
    async start() {
      await pgCtl(['-o', serverOptions, '-l', logFile, 'start']);
      running = true;
    },
    isRunning: () => running,
    async destroy() {
      process.removeListener('exit', stopOnExit);
      try {
        if (running) await cluster.stop('immediate');
      } finally {
        rmSync(root, { recursive: true, force: true });
      }
    },
    log: () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : ''),
  };

  try {
    await exec('initdb', [
      '-D',
      data,
      '-A',
      'trust',
      '-U',
      'postgres',
      '--no-sync',
      '-E',
      'UTF8',
      '--locale=C',
    ]);
    await cluster.start();
  } catch (error) {
    await cluster.destroy().catch(() => {});
    throw error;
  }
  return cluster;
}
