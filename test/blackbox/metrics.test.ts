/**
 * Issue 11, metrics: a real server started with METRICS_PORT serves Prometheus's text format on that port (bound to
 * loopback, no authentication) and nothing on its main port; with WORKERS=2 the primary's listener reports every
 * worker; a METRICS_PORT that is taken stops the start with a clear message.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import os from 'node:os';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { parseSamples, type Sample, samplesOf, total } from '../support/prometheus.ts';
import { postForm, postJson, request, strongPassword, uniqueName } from './support/client.ts';
import {
  createDatabase,
  DIALECTS,
  getFreePort,
  type RunningServer,
  runUntilExit,
  startServer,
  type TestDatabase,
} from './support/server.ts';

vi.setConfig({ testTimeout: 30_000, hookTimeout: 60_000 });

const REQUESTS = 'gatehouse_http_request_duration_seconds_count';

async function scrape(port: number): Promise<Sample[]> {
  const response = await request(`http://127.0.0.1:${port}/metrics`);
  expect(response.status, response.text).toBe(200);
  expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return parseSamples(response.text);
}

function useMetricsServer(dialect: 'sqlite' | 'postgres', env: Record<string, string> = {}) {
  const running: { server?: RunningServer; db?: TestDatabase; metricsPort: number } = { metricsPort: 0 };
  beforeAll(async () => {
    running.metricsPort = await getFreePort();
    running.db = await createDatabase(dialect);
    running.server = await startServer({
      databaseUrl: running.db.url,
      env: { METRICS_PORT: String(running.metricsPort), ...env },
    });
  }, 60_000);
  afterAll(async () => {
    try {
      const stopped = await running.server?.stop();
      expect(stopped?.code).toBe(0);
    } finally {
      await running.db?.drop();
    }
  }, 30_000);
  return running;
}

describe.each(DIALECTS)('METRICS_PORT on %s', (dialect) => {
  const running = useMetricsServer(dialect);
  const main = (path: string) => running.server?.url(path) ?? '';

  it('serves the Prometheus text format on its own port, counting real logins and requests', async () => {
    const before = await scrape(running.metricsPort);
    const username = uniqueName();
    const password = strongPassword();
    const registered = await postJson(main('/register/'), {
      username,
      email: `${username}@example.com`,
      password,
      age: 30,
      level: 'beginner',
    });
    expect(registered.status).toBe(200);
    expect((await postForm(main('/token'), { username, password })).status).toBe(200);
    expect((await postForm(main('/token'), { username, password: `${password}x` })).status).toBe(400);
    const after = await scrape(running.metricsPort);

    const delta = (name: string, labels: Record<string, string>) =>
      total(after, name, labels) - total(before, name, labels);
    expect(delta('gatehouse_security_events_total', { event: 'user_registered' })).toBe(1);
    expect(delta('gatehouse_logins_total', { outcome: 'succeeded' })).toBe(1);
    expect(delta('gatehouse_logins_total', { outcome: 'failed' })).toBe(1);
    expect(delta(REQUESTS, { route: '/token', method: 'POST', status_code: '200' })).toBe(1);
    expect(delta(REQUESTS, { route: '/register/', method: 'POST', status_code: '200' })).toBe(1);
    expect(samplesOf(after, 'process_cpu_seconds_total')).toHaveLength(1);
  });

  it('answers /metrics 404 on the main port when no METRICS_TOKEN is set', async () => {
    const response = await request(main('/metrics'));
    expect(response.status).toBe(404);
    expect(response.json).toEqual({ detail: 'Not Found' });
  });

  it('serves nothing but GET /metrics on the metrics port', async () => {
    const other = await request(`http://127.0.0.1:${running.metricsPort}/healthz`);
    expect(other.status).toBe(404);
    expect(other.json).toEqual({ detail: 'Not Found' });
    const post = await request(`http://127.0.0.1:${running.metricsPort}/metrics`, { method: 'POST' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
  });

  it(
    dialect === 'postgres'
      ? 'reports the PostgreSQL pool'
      : 'reports no pool on SQLite, which has one connection',
    async () => {
      const samples = await scrape(running.metricsPort);
      if (dialect === 'sqlite') {
        expect(samples.filter((sample) => sample.name.startsWith('gatehouse_db_pool_'))).toEqual([]);
        return;
      }
      expect(total(samples, 'gatehouse_db_pool_connections')).toBeGreaterThanOrEqual(1);
      expect(total(samples, 'gatehouse_db_pool_max_connections')).toBeGreaterThanOrEqual(1);
      expect(samplesOf(samples, 'gatehouse_db_pool_waiting_queries')).toHaveLength(1);
    },
  );

  it('listens on loopback only by default: another address of this machine is refused', async () => {
    const external = Object.values(os.networkInterfaces())
      .flat()
      .find((address) => address && address.family === 'IPv4' && !address.internal)?.address;
    if (!external) return;
    const refused = await new Promise<boolean>((resolve) => {
      const socket = net.connect({ host: external, port: running.metricsPort });
      socket.once('connect', () => {
        socket.destroy();
        resolve(false);
      });
      socket.once('error', () => resolve(true));
    });
    expect(refused).toBe(true);
  });
});

describe('METRICS_PORT with WORKERS=2 and METRICS_TOKEN', () => {
  const token = randomBytes(32).toString('base64url');
  const running = useMetricsServer('sqlite', { WORKERS: '2', METRICS_TOKEN: token });

  it("reports every worker's metrics on the primary's port, each under its worker label", async () => {
    const before = await scrape(running.metricsPort);
    for (let i = 0; i < 20; i += 1) {
      // A new connection each time, so that the cluster may hand it to either worker.
      const response = await request(running.server?.url('/healthz') ?? '', {
        headers: { connection: 'close' },
      });
      expect(response.status).toBe(200);
    }
    const after = await scrape(running.metricsPort);
    const workers = new Set(
      samplesOf(after, 'process_cpu_seconds_total').map((sample) => sample.labels.worker),
    );
    expect(workers.size).toBe(2);
    expect(workers.has(undefined)).toBe(false);
    const healthz = { route: '/healthz', method: 'GET', status_code: '200' };
    expect(total(after, REQUESTS, healthz) - total(before, REQUESTS, healthz)).toBe(20);
  });

  it('answers a Bearer scrape of the main port with the one worker that took it, labelled', async () => {
    const response = await request(running.server?.url('/metrics') ?? '', {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(response.status).toBe(200);
    const workers = new Set(parseSamples(response.text).map((sample) => sample.labels.worker));
    expect(workers.size).toBe(1);
    expect(workers.has(undefined)).toBe(false);
  });
});

describe('METRICS_PORT already taken', () => {
  it('refuses to start and names METRICS_PORT', async () => {
    const holder = net.createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    const { port } = holder.address() as net.AddressInfo;
    try {
      const database = await createDatabase('sqlite');
      try {
        const result = await runUntilExit({ DATABASE_URL: database.url, METRICS_PORT: String(port) });
        expect(result.timedOut).toBe(false);
        expect(result.code).toBe(1);
        expect(result.output).toMatch(/METRICS_PORT/);
      } finally {
        await database.drop();
      }
    } finally {
      holder.close();
    }
  });
});
