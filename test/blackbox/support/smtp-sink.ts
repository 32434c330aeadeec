/**
 * A real SMTP server in the test process (AUTH-FLOWS.md §6): smtp-server without TLS, every message parsed by
 * mailparser and kept. The server under test reaches it through `SMTP_URL=smtp://127.0.0.1:PORT`. It can be stopped
 * and started again on the same port, to play an SMTP outage.
 */
import type { Readable } from 'node:stream';
import { type AddressObject, type ParsedMail, simpleParser } from 'mailparser';
import { SMTPServer } from 'smtp-server';

export interface ReceivedMail {
  /** The envelope's recipients (RCPT TO), lower-cased. */
  to: string[];
  /** The envelope's sender (MAIL FROM), lower-cased; '' for a null sender. */
  envelopeFrom: string;
  /** The From header's addresses, lower-cased. */
  from: string[];
  subject: string;
  text: string;
  html: string;
  /** Every header line as sent, unfolded as received. */
  headerText: string;
  /** The whole message as it came over the wire. */
  raw: string;
  receivedAt: number;
  parsed: ParsedMail;
}

export interface NextOptions {
  to: string;
  timeoutMs?: number;
  /** Only a mail this accepts is taken; others stay for later calls. */
  match?: (m: ReceivedMail) => boolean;
}

function addresses(field: AddressObject | AddressObject[] | undefined): string[] {
  const list = field === undefined ? [] : Array.isArray(field) ? field : [field];
  return list.flatMap((a) => a.value.map((v) => (v.address ?? '').toLowerCase()));
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(typeof c === 'string' ? Buffer.from(c) : (c as Buffer));
  return Buffer.concat(chunks);
}

export class SmtpSink {
  /** Every mail received since start, in arrival order (restarts keep them). */
  readonly mails: ReceivedMail[] = [];
  private readonly taken = new Set<ReceivedMail>();
  private waiters: Array<() => void> = [];
  private server: SMTPServer | undefined;
  port: number;
  private constructor(port: number) {
    this.port = port;
  }

  static async start(port = 0): Promise<SmtpSink> {
    const sink = new SmtpSink(port);
    await sink.listen();
    return sink;
  }

  get url(): string {
    return `smtp://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.server !== undefined;
  }

  private async listen(): Promise<void> {
    const server = new SMTPServer({
      authOptional: true,
      disabledCommands: ['STARTTLS'],
      logger: false,
      // A stopped sink must free its port at once, connections and all, to be started again on it.
      closeTimeout: 500,
      onData: (stream, session, callback) => {
        readAll(stream)
          .then(async (buf) => {
            const parsed = await simpleParser(buf);
            const mail: ReceivedMail = {
              to: session.envelope.rcptTo.map((r) => r.address.toLowerCase()),
              envelopeFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address.toLowerCase() : '',
              from: addresses(parsed.from),
              subject: parsed.subject ?? '',
              text: parsed.text ?? '',
              html: typeof parsed.html === 'string' ? parsed.html : '',
              headerText: parsed.headerLines.map((h) => h.line).join('\n'),
              raw: buf.toString('utf8'),
              receivedAt: Date.now(),
              parsed,
            };
            this.mails.push(mail);
            const waiting = this.waiters;
            this.waiters = [];
            for (const w of waiting) w();
            callback();
          })
          .catch((e: Error) => callback(e));
      },
    });
    await new Promise<void>((resolve, reject) => {
      const onError = (e: Error) => reject(e);
      server.once('error', onError);
      server.listen(this.port, '127.0.0.1', () => {
        server.off('error', onError);
        resolve();
      });
    });
    server.on('error', () => {
      // a client dropping its connection; the outbox's retries are what the tests look at
    });
    const addr = server.server.address();
    if (addr === null || typeof addr === 'string') throw new Error('SMTP sink: no port');
    this.port = addr.port;
    this.server = server;
  }

  /** Stops accepting connections (the port is closed: clients get ECONNREFUSED). */
  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Listens again on the same port. */
  async restart(): Promise<void> {
    if (this.server) return;
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        await this.listen();
        return;
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** Mails to `to` received so far (taken or not). */
  all(to: string): ReceivedMail[] {
    const t = to.toLowerCase();
    return this.mails.filter((m) => m.to.includes(t));
  }

  private find(opts: NextOptions): ReceivedMail | undefined {
    const t = opts.to.toLowerCase();
    return this.mails.find((m) => !this.taken.has(m) && m.to.includes(t) && (opts.match?.(m) ?? true));
  }

  /** The next mail to `to` not yet taken (waiting for it); throws after timeoutMs with what did arrive. */
  async next(opts: NextOptions): Promise<ReceivedMail> {
    const timeoutMs = opts.timeoutMs ?? 20_000;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = this.find(opts);
      if (m) {
        this.taken.add(m);
        return m;
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        const seen = this.all(opts.to).map((x) => `"${x.subject}"${this.taken.has(x) ? ' (taken)' : ''}`);
        throw new Error(
          `no mail to ${opts.to} within ${timeoutMs} ms (mails to it: ${seen.join(', ') || 'none'}; ` +
            `${this.mails.length} mails in all; sink ${this.running ? 'running' : 'stopped'} on ${this.port})`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 1000));
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Waits `ms` and returns the mails to `to` not yet taken (for asserting that none came). */
  async untakenAfter(to: string, ms: number): Promise<ReceivedMail[]> {
    await new Promise((r) => setTimeout(r, ms));
    const t = to.toLowerCase();
    return this.mails.filter((m) => !this.taken.has(m) && m.to.includes(t));
  }
}
