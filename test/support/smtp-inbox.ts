import type { AddressInfo } from 'node:net';
import { type ParsedMail, simpleParser } from 'mailparser';
import { SMTPServer } from 'smtp-server';

/** A mail the inbox received: the envelope as the client gave it, and the message as mailparser reads it. */
export interface ReceivedMail {
  envelopeFrom: string;
  envelopeTo: string[];
  from: string;
  to: string[];
  subject: string;
  text: string;
  html: string;
  parsed: ParsedMail;
}

export interface SmtpInbox {
  readonly port: number;
  /** smtp://127.0.0.1:PORT, for SMTP_URL. */
  readonly url: string;
  /** The first mail to `to` (any mail without it) not taken yet; waits for one up to `timeoutMs`. */
  next(options?: { to?: string; timeoutMs?: number }): Promise<ReceivedMail>;
  /** Every mail received, taken or not. */
  all(): ReceivedMail[];
  /**
   * Every command line clients sent, as on the wire: the parsed envelope shows an A-label domain as Unicode (smtp-server
   * decodes it), so what a client really sent is read here.
   */
  commands(): string[];
  /** Refuses the next `count` recipients with a temporary error (451), as a busy server does. */
  failNext(count?: number): void;
  /**
   * Refuses the next mail with the reply `refusal` writes, at its recipient or once its data arrived: a server that
   * quotes the address, or the message (a content filter), in its refusal.
   */
  refuseNext(at: 'rcpt' | 'data', refusal: (mail: { to: string; text: string }) => SmtpRefusal): void;
  /** Stops listening, closing open connections; mails received stay readable. */
  stop(): Promise<void>;
  /** Listens again on the same port, after stop(). */
  restart(): Promise<void>;
}

export interface SmtpRefusal {
  code: number;
  message: string;
}

const addressesOf = (field: ParsedMail['to'] | ParsedMail['from']): string[] =>
  (Array.isArray(field) ? field : field ? [field] : []).flatMap((group) =>
    group.value.map((entry) => entry.address ?? ''),
  );

/**
 * A real SMTP server in the test process, on 127.0.0.1 (port 0 picks one): no TLS, any or no authentication,
 * every mail parsed with mailparser's simpleParser.
 */
export async function startSmtpInbox(
  options: {
    port?: number /** How long the server takes to accept each mail's data, as a slow one does. */;
    dataDelayMs?: number;
  } = {},
): Promise<SmtpInbox> {
  const received: ReceivedMail[] = [];
  const taken = new Set<ReceivedMail>();
  const waiters = new Set<() => void>();
  let failures = 0;
  let refusal:
    | { at: 'rcpt' | 'data'; reply: (mail: { to: string; text: string }) => SmtpRefusal }
    | undefined;
  const refuse = (mail: { to: string; text: string }) => {
    const reply = refusal?.reply(mail) as SmtpRefusal;
    refusal = undefined;
    return Object.assign(new Error(reply.message), { responseCode: reply.code });
  };
  const commands: string[] = [];
  const ignore = () => {};
  const logger = {
    trace: ignore,
    info: ignore,
    warn: ignore,
    error: ignore,
    fatal: ignore,
    debug: (_entry: unknown, message: unknown, line: unknown) => {
      if (message === 'C:' && typeof line === 'string') commands.push(line);
    },
  };
  const makeServer = () =>
    new SMTPServer({
      authOptional: true,
      disabledCommands: ['STARTTLS'],
      logger: logger as never,
      closeTimeout: 500,
      onAuth: (_auth, _session, callback) => callback(null, { user: 'test' }),
      onRcptTo: (address, _session, callback) => {
        if (refusal?.at === 'rcpt') {
          callback(refuse({ to: address.address, text: '' }));
          return;
        }
        if (failures > 0) {
          failures -= 1;
          const error = Object.assign(new Error('Try again later'), { responseCode: 451 });
          callback(error);
          return;
        }
        callback();
      },
      onData: (stream, session, callback) => {
        simpleParser(stream).then(
          (parsed) => {
            if (refusal?.at === 'data') {
              const to = session.envelope.rcptTo.map((recipient) => recipient.address).join(', ');
              callback(refuse({ to, text: parsed.text ?? '' }));
              return;
            }
            received.push({
              envelopeFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
              envelopeTo: session.envelope.rcptTo.map((recipient) => recipient.address),
              from: addressesOf(parsed.from)[0] ?? '',
              to: addressesOf(parsed.to),
              subject: parsed.subject ?? '',
              text: parsed.text ?? '',
              html: typeof parsed.html === 'string' ? parsed.html : '',
              parsed,
            });
            for (const wake of waiters) wake();
            if (options.dataDelayMs) setTimeout(callback, options.dataDelayMs);
            else callback();
          },
          (error) => callback(error),
        );
      },
    });
  let server = makeServer();
  const listen = (port: number) =>
    new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve((server.server.address() as AddressInfo).port);
      });
    });
  const port = await listen(options.port ?? 0);
  let listening = true;

  const findFree = (to: string | undefined) =>
    received.find(
      (mail) =>
        !taken.has(mail) && (to === undefined || mail.envelopeTo.includes(to) || mail.to.includes(to)),
    );

  return {
    port,
    url: `smtp://127.0.0.1:${port}`,
    async next({ to, timeoutMs = 10_000 } = {}) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const mail = findFree(to);
        if (mail) {
          taken.add(mail);
          return mail;
        }
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`no mail${to ? ` to ${to}` : ''} within ${timeoutMs} ms`);
        await new Promise<void>((resolve) => {
          const wake = () => {
            clearTimeout(timer);
            waiters.delete(wake);
            resolve();
          };
          const timer = setTimeout(wake, left);
          waiters.add(wake);
        });
      }
    },
    commands: () => [...commands],
    all: () => [...received],
    failNext(count = 1) {
      failures += count;
    },
    refuseNext(at, reply) {
      refusal = { at, reply };
    },
    async stop() {
      if (!listening) return;
      listening = false;
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
    async restart() {
      if (listening) return;
      server = makeServer();
      await listen(port);
      listening = true;
    },
  };
}
