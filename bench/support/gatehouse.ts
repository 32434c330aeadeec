import { type ChildProcess, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { type Bench, log } from './context.ts';
import { measure } from './load.ts';
import { freePort, start, stop, waitFor } from './processes.ts';

const password = 'correct horse battery staple';
export const uniqueName = () => `b${randomBytes(6).toString('hex')}`;
export const tokenForm = new URLSearchParams({
  grant_type: 'password',
  username: 'benchuser',
  password,
}).toString();
export const formHeaders = { 'content-type': 'application/x-www-form-urlencoded' };
const registration = (username: string, email = `${username}@example.com`) =>
  JSON.stringify({ username, email, password, age: 30, level: 'beginner' });
export const registerBody = () => registration(uniqueName(), `${uniqueName()}@example.com`);

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
  return (await registerForTokens(base, username)).accessToken;
}

/** Registers a user and logs in: the access token and the refresh token of the new session. */
export async function registerForTokens(base: string, username: string) {
  const registered = await fetch(`${base}/register/`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: registration(username),
  });
  if (registered.status !== 200) throw new Error(`register: ${registered.status} ${await registered.text()}`);
  const token = await fetch(`${base}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ username, password }).toString(),
  });
  if (token.status !== 200) throw new Error(`token: ${token.status} ${await token.text()}`);
  const tokens = (await token.json()) as { access_token: string; refresh_token: string };
  return { accessToken: tokens.access_token, refreshToken: tokens.refresh_token };
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

/** GET /conversation and POST /token on one server started for them, the rows named `…, ${label}`. */
export async function measureConversationAndToken(bench: Bench, databaseUrl: string, label: string) {
  const server = await startGatehouse(bench, databaseUrl);
  const token = await registerAndLogin(server.base, 'benchuser');
  const usesPostgres = databaseUrl.startsWith('postgres');
  const conversation = await measure(
    bench,
    `Gatehouse GET /conversation, ${label}`,
    server.pid,
    { url: `${server.base}/conversation`, headers: { authorization: `Bearer ${token}` } },
    usesPostgres,
  );
  await measure(
    bench,
    `Gatehouse POST /token, ${label}`,
    server.pid,
    { url: `${server.base}/token`, method: 'POST', headers: formHeaders, body: tokenForm, connections: 8 },
    usesPostgres,
  );
  await stop(server.child);
  return conversation;
}
