/**
 * SIGTERM while a load runs: every request the server accepted gets a complete HTTP answer, then the process exits 0.
 * 200 concurrent requests mix GET /conversation and password logins (production argon2 cost, so logins queue for the
 * hash slots and some are shed with 503), half on connections of their own and half on keep-alive connections that
 * go on sending after the signal.
 */
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postForm, registerFresh } from './support/client.ts';
import {
  createDatabase,
  DIALECTS,
  type RunningServer,
  startServer,
  type TestDatabase,
} from './support/server.ts';

interface Outcome {
  kind: 'conversation' | 'login';
  keepAlive: boolean;
  /** The TCP connection was established: the request reached the server's socket. */
  connected: boolean;
  status?: number;
  /** The body arrived to its announced end. */
  complete: boolean;
  connection?: string;
  error?: string;
}

function send(
  port: number,
  agent: http.Agent | false,
  kind: Outcome['kind'],
  access: string,
  user: { username: string; password: string },
): Promise<Outcome> {
  const body =
    kind === 'login'
      ? new URLSearchParams({ username: user.username, password: user.password }).toString()
      : '';
  return new Promise((resolve) => {
    const outcome: Outcome = { kind, keepAlive: agent !== false, connected: false, complete: false };
    const request = http.request(
      {
        host: '127.0.0.1',
        port,
        agent,
        method: kind === 'login' ? 'POST' : 'GET',
        path: kind === 'login' ? '/token' : '/conversation',
        headers:
          kind === 'login'
            ? {
                'content-type': 'application/x-www-form-urlencoded',
                'content-length': Buffer.byteLength(body),
              }
            : { authorization: `Bearer ${access}` },
        timeout: 30_000,
      },
      (response) => {
        outcome.status = response.statusCode;
        outcome.connection = response.headers.connection;
        response.resume();
        response.on('end', () => {
          outcome.complete = response.complete;
          resolve(outcome);
        });
        response.on('error', (error) => {
          outcome.error = String(error);
          resolve(outcome);
        });
      },
    );
    request.on('socket', (socket) => {
      // A reused keep-alive socket is connected already.
      if (!socket.connecting) outcome.connected = true;
      socket.once('connect', () => {
        outcome.connected = true;
      });
    });
    request.on('timeout', () => request.destroy(new Error('no answer within 30 s')));
    request.on('error', (error) => {
      outcome.error = `${(error as NodeJS.ErrnoException).code ?? ''} ${error.message}`;
      resolve(outcome);
    });
    request.end(body);
  });
}

describe.each(DIALECTS)('SIGTERM under load (%s)', (dialect) => {
  let db: TestDatabase;
  let server: RunningServer | undefined;
  beforeAll(async () => {
    db = await createDatabase(dialect);
  });
  afterAll(async () => {
    if (server && server.proc.exitCode === null) await server.stop();
    await db.drop();
  }, 30_000);

  it('answers every request it accepted, completely, then exits 0', async () => {
    server = await startServer({
      databaseUrl: db.url,
      fastArgon2: false,
      env: { SHUTDOWN_DRAIN_MS: undefined },
    });
    const user = await registerFresh(server, 'drain');
    const login = await postForm(server.url('/token'), user);
    expect(login.status, login.text).toBe(200);
    const access = login.json.access_token as string;

    const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 16 });
    const outcomes: Promise<Outcome>[] = [];
    let answered = 0;
    for (let i = 0; i < 200; i += 1) {
      const kind = i % 4 === 0 ? 'login' : 'conversation';
      const agent = i % 2 === 0 ? false : keepAlive;
      outcomes.push(
        send(server.port, agent, kind, access, user).then((outcome) => {
          answered += 1;
          return outcome;
        }),
      );
    }
    while (answered < 60) await sleep(1);
    const signalledAfter = answered;
    server.proc.kill('SIGTERM');
    // Draining: still listening, but no longer ready, so that a load balancer stops sending.
    let readiness: { status: number; text: string } | undefined;
    for (let attempt = 0; attempt < 50 && readiness?.status !== 503; attempt += 1) {
      const r = await fetch(server.url('/readyz'), { headers: { connection: 'close' } });
      readiness = { status: r.status, text: await r.text() };
      if (r.status !== 503) await sleep(10);
    }
    expect(readiness?.status, readiness?.text).toBe(503);
    expect(JSON.parse(readiness?.text ?? '{}').detail).toBe('Shutting down');
    const results = await Promise.all(outcomes);
    const exit = await Promise.race([
      server.exited,
      sleep(20_000).then(() => 'still running 20 s after SIGTERM'),
    ]);
    keepAlive.destroy();

    const summary = (list: Outcome[]) =>
      list.map((o) => `${o.kind}${o.keepAlive ? ' (keep-alive)' : ''}: ${o.status ?? o.error}`).join('\n');
    const accepted = results.filter((o) => o.connected);
    const cutShort = accepted.filter((o) => o.error !== undefined || !o.complete);
    expect(cutShort, `${summary(cutShort)}\n${server.output().slice(-3000)}`).toEqual([]);
    expect(
      accepted.filter((o) => ![200, 503].includes(o.status ?? 0)),
      summary(accepted),
    ).toEqual([]);
    // Only connections opened after the listener closed were refused, and nothing else went wrong.
    const refused = results.filter((o) => !o.connected);
    expect(
      refused.filter((o) => !/ECONNREFUSED/.test(o.error ?? '')),
      summary(refused),
    ).toEqual([]);
    // The signal came mid-way, and requests answered after it still did their work.
    expect(signalledAfter).toBeLessThan(200);
    expect(accepted.length).toBeGreaterThan(signalledAfter);
    expect(exit, server.output().slice(-3000)).toEqual({ code: 0, signal: null });
    console.log(
      `SIGTERM under load (${dialect}) after ${signalledAfter} answers: ${accepted.length} accepted ` +
        `(${accepted.filter((o) => o.status === 200).length} × 200, ${accepted.filter((o) => o.status === 503).length} × 503), ` +
        `${refused.length} refused at connect`,
    );
  }, 90_000);

  // Found from outside: Node's closeIdleConnections leaves a connection that has sent no whole request, so one such
  // connection (a load balancer's spare, a client still sending its headers) held the exit until the grace timer
  // killed the process with 1.
  it('exits 0 at once past the drain while connections that sent no whole request stay open', async () => {
    server = await startServer({ databaseUrl: db.url, env: { SHUTDOWN_DRAIN_MS: '100' } });
    const silent = net.connect(server.port, '127.0.0.1');
    const halfway = net.connect(server.port, '127.0.0.1');
    await Promise.all([once(silent, 'connect'), once(halfway, 'connect')]);
    halfway.write('GET /healthz HTTP/1.1\r\nHost: x\r\n');
    for (const socket of [silent, halfway]) socket.on('error', () => {});
    const signalled = performance.now();
    server.proc.kill('SIGTERM');
    const exit = await Promise.race([
      server.exited,
      sleep(8_000).then(() => 'still running 8 s after SIGTERM'),
    ]);
    silent.destroy();
    halfway.destroy();
    expect(exit, server.output().slice(-3000)).toEqual({ code: 0, signal: null });
    expect(performance.now() - signalled).toBeLessThan(5_000);
  }, 30_000);
});
