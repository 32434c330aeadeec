import { type ChildProcess, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { type Bench, log } from './context.ts';
import { freePort, start, waitFor } from './processes.ts';

export const password = 'correct horse battery staple';
export const uniqueName = () => `b${randomBytes(6).toString('hex')}`;
export const tokenForm = new URLSearchParams({
  grant_type: 'password',
  username: 'benchuser',
  password,
}).toString();
export const formHeaders = { 'content-type': 'application/x-www-form-urlencoded' };
export const registerBody = () =>
  JSON.stringify({
    username: uniqueName(),
    email: `${uniqueName()}@example.com`,
    password,
    age: 30,
    level: 'beginner',
  });

export interface RunningGatehouse {
  base: string;
  pid: number;
  child: ChildProcess;
}

export async function startGatehouse(
  bench: Bench,
  databaseUrl: string,
  env: Record<string, string> = {},
): Promise<RunningGatehouse> {
  const port = await freePort();
  // Exactly what the README runs, so the flags and the compile cache of `npm start` are measured too.
  const server = start(bench, 'npm', ['start', '--silent'], {
    PORT: String(port),
    HOST: '127.0.0.1',
    DATABASE_URL: databaseUrl,
    RATE_LIMITS: 'off',
    ...env,
  });
  const base = `http://127.0.0.1:${port}`;
  await waitFor(`${base}/healthz`).catch((error) => {
    throw new Error(`${error.message}: ${server.stderr()}`);
  });
  return { base, pid: server.child.pid as number, child: server.child };
}

export async function registerAndLogin(base: string, username: string) {
  const registered = await fetch(`${base}/register/`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      username,
      email: `${username}@example.com`,
      password,
      age: 30,
      level: 'beginner',
    }),
  });
  if (registered.status !== 200) throw new Error(`register: ${registered.status} ${await registered.text()}`);
  const token = await fetch(`${base}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ username, password }).toString(),
  });
  if (token.status !== 200) throw new Error(`token: ${token.status} ${await token.text()}`);
  return ((await token.json()) as { access_token: string }).access_token;
}

export function seedUsers(bench: Bench, databaseUrl: string, count: number) {
  if (count <= 0) return;
  log(`seeding ${count} users`);
  execFileSync(process.execPath, ['src/main.ts', 'seed-users', '--count', String(count)], {
    cwd: bench.root,
    env: { ...process.env, GATEHOUSE_SECRET: bench.secret, DATABASE_URL: databaseUrl },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
}
