import { connect, type Socket } from 'node:net';

/**
 * Requests Node's HTTP server refuses before any route runs (its parser, its Host and Expect checks), with the status
 * Gatehouse answers them with.
 */
export const PARSER_REFUSALS: readonly [request: string, status: number][] = [
  ['NOT A REQUEST\r\n\r\n', 400],
  ['POST /token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', 400],
  [`GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, 431],
  // RFC 9112 §3.2: an HTTP/1.1 request without Host is refused with 400.
  ['GET /healthz HTTP/1.1\r\n\r\n', 400],
  // With a body too: the answer came before the body was read, which had kept the connection open (found from outside).
  ['POST /register/ HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}', 400],
  ['POST /token HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}', 400],
  ['POST /token HTTP/1.1\r\nHost: a b\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}', 400],
  ['POST /token HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 0\r\n\r\n', 417],
  // RFC 9110 §4.2.4: userinfo in the target is an error (found from outside: it was served, and logged).
  ['GET http://user:secret@x/healthz HTTP/1.1\r\nHost: x\r\n\r\n', 400],
  // Node took 100-continue among other expectations for 100-continue alone (found from outside).
  ['POST /token HTTP/1.1\r\nHost: x\r\nExpect: 100-continue, foo\r\nContent-Length: 0\r\n\r\n', 417],
  // RFC 9112 §3: a request-target longer than the server parses MUST get 414, not the headers' 431.
  [`GET /healthz?x=${'a'.repeat(20_000)} HTTP/1.1\r\nHost: x\r\n\r\n`, 414],
  // RFC 9110 §9.1: a well-formed request with a method the server does not know SHOULD get 501.
  ['FOO /healthz HTTP/1.1\r\nHost: x\r\n\r\n', 501],
  // RFC 9110 §15.6.6: a major version the server does not support.
  ['GET /healthz HTTP/3.0\r\nHost: x\r\n\r\n', 505],
  // Versions Node's parser reads, which are not HTTP/1.x either.
  ['GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n', 505],
  ['GET /healthz HTTP/0.9\r\nHost: x\r\n\r\n', 505],
];

/** Writes `request` as it is and resolves with everything the server sent until it closed. */
export function rawExchange(port: number, request: string): Promise<string> {
  return rawExchangeInParts(port, [request]);
}

/** Connects, lets `send` write, and resolves with everything the server sent until it closed. */
function exchange(port: number, send: (socket: Socket) => void): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => send(socket));
    let received = '';
    socket.setTimeout(5000, () => socket.destroy(new Error('no close within 5 s')));
    socket.on('data', (chunk) => {
      received += chunk.toString('latin1');
    });
    socket.on('error', reject);
    socket.on('close', () => resolve(received));
  });
}

/**
 * Writes the parts of a request one after another, `pauseMs` apart (as a network may deliver them), and resolves with
 * everything the server sent until it closed.
 */
export function rawExchangeInParts(port: number, parts: string[], pauseMs = 100): Promise<string> {
  return exchange(port, async (socket) => {
    for (const [index, part] of parts.entries()) {
      if (index > 0) await new Promise((wait) => setTimeout(wait, pauseMs));
      if (!socket.destroyed) socket.write(part);
    }
  });
}

/**
 * Writes `request` and ends the client's side at once (a FIN, as `nc -N` sends), still reading: resolves with everything
 * the server sent until it closed.
 */
export function halfClosedExchange(port: number, request: string): Promise<string> {
  return exchange(port, (socket) => socket.end(request));
}

/** The status line, the headers (lower-case names) and the body of a raw HTTP/1.1 answer. */
export function parseRawAnswer(raw: string): {
  statusLine: string;
  headers: Record<string, string>;
  body: string;
} {
  const [head = '', body = ''] = raw.split('\r\n\r\n');
  const [statusLine = '', ...lines] = head.split('\r\n');
  const headers = Object.fromEntries(
    lines.map((line) => [
      line.slice(0, line.indexOf(':')).toLowerCase(),
      line.slice(line.indexOf(':') + 1).trim(),
    ]),
  );
  return { statusLine, headers, body };
}
