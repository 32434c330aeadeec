import { Agent, request } from 'node:http';
import { describe, expect, it } from 'vitest';
import { useServer } from './support/server.ts';

/** One request on a keep-alive agent: its status and the Connection header the server sent. */
function exchange(url: string, method: string, agent: Agent, body?: string) {
  return new Promise<{ status: number; connection: string | undefined }>((resolve, reject) => {
    const req = request(
      url,
      {
        method,
        agent,
        headers:
          body === undefined
            ? {}
            : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      },
      (response) => {
        response.resume();
        response.on('end', () =>
          resolve({ status: response.statusCode ?? 0, connection: response.headers.connection }),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

// A request without a body is complete when its headers are: answering it at once must not close the connection
// (the rule that closes it is for a body left unread).
describe('connections kept alive (sqlite)', () => {
  const ctx = useServer('sqlite');

  it.each([
    ['GET', '/healthz', 200],
    ['GET', '/no-such-path', 404],
    ['DELETE', '/conversation', 405],
    ['POST', '/', 405],
    ['GET', '/docs/json', 200],
    ['GET', '/openapi.json', 200],
    ['GET', '/conversation', 401],
  ])('%s %s answers %i and keeps the connection', async (method, path, status) => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const reply = await exchange(ctx.url(path), method, agent);
      expect(reply.status).toBe(status);
      expect(reply.connection).toBe('keep-alive');
    } finally {
      agent.destroy();
    }
  });

  it('keeps it after an answer to a request whose small body was read', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const reply = await exchange(ctx.url('/register/'), 'POST', agent, '{}');
      expect(reply.status).toBe(422);
      expect(reply.connection).toBe('keep-alive');
    } finally {
      agent.destroy();
    }
  });
});
