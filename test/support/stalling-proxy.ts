import net from 'node:net';

/** A TCP server on a free port that accepts connections and never answers, as a hung Redis does. */
export async function startSilentServer(): Promise<{ url: string; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `redis://127.0.0.1:${port}`,
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/**
 * A TCP proxy to `target` that can stall: while stalled, what either side sends is held (as a stopped process's
 * kernel would hold it), and delivered in order once it resumes.
 */
export async function startStallingProxy(target: string): Promise<{
  url: string;
  /** The port it listens on. */
  port: number;
  stall(): void;
  resume(): void;
  /**
   * Makes every connection open now drop what either side sends, for good, as a firewall or NAT that lost their state
   * does; connections opened later are forwarded.
   */
  strand(): void;
  /** From now on, a connection on which the client sends `pattern` gets no more answers from the server, for good. */
  strandAfterClientSends(pattern: RegExp): void;
  close(): Promise<void>;
}> {
  const { hostname, port: targetPort } = new URL(target);
  let stalled = false;
  const flushes = new Set<() => void>();
  const sockets = new Set<net.Socket>();
  const stranded = new WeakSet<net.Socket>();
  const clients = new WeakSet<net.Socket>();
  let strandingPattern: RegExp | undefined;
  const forward = (from: net.Socket, to: net.Socket) => {
    const held: Buffer[] = [];
    from.on('data', (chunk: Buffer) => {
      if (stranded.has(from)) return;
      if (strandingPattern && clients.has(from) && strandingPattern.test(chunk.toString('latin1')))
        stranded.add(to);
      if (stalled) held.push(chunk);
      else to.write(chunk);
    });
    flushes.add(() => {
      for (const chunk of held.splice(0)) to.write(chunk);
    });
  };
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(targetPort), hostname);
    clients.add(client);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('error', () => {});
      socket.on('close', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    forward(client, upstream);
    forward(upstream, client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    stall() {
      stalled = true;
    },
    strand() {
      for (const socket of sockets) stranded.add(socket);
    },
    strandAfterClientSends(pattern) {
      strandingPattern = pattern;
    },
    resume() {
      stalled = false;
      for (const flush of flushes) flush();
    },
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/**
 * A TCP proxy to `target` whose new connections are forwarded, or accepted and never answered (`silent`, as behind a
 * network fault that lets the handshake through), and whose `reset` drops every connection it holds. A connection
 * taken while silent stays silent: only new connections see the proxy forward again.
 */
export async function startSwitchingProxy(target: string): Promise<{
  url: string;
  forward(): void;
  silent(): void;
  reset(): void;
  close(): Promise<void>;
}> {
  const { hostname, port: targetPort } = new URL(target);
  let mode: 'forward' | 'silent' = 'forward';
  const sockets = new Set<net.Socket>();
  const keep = (socket: net.Socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
  };
  const server = net.createServer((client) => {
    keep(client);
    if (mode === 'silent') return;
    const upstream = net.connect(Number(targetPort), hostname);
    keep(upstream);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `redis://127.0.0.1:${port}`,
    forward() {
      mode = 'forward';
    },
    silent() {
      mode = 'silent';
    },
    reset() {
      for (const socket of sockets) socket.destroy();
    },
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
