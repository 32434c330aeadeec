/**
 * A real SMTP server in the test process, on 127.0.0.1 and a port of the system's choosing, that keeps every mail it
 * is given, parsed. Plain SMTP without authentication or STARTTLS: the server under test gets
 * `SMTP_URL=smtp://127.0.0.1:PORT`.
 */
import type { AddressInfo } from 'node:net';
import { type ParsedMail, simpleParser } from 'mailparser';
import { SMTPServer } from 'smtp-server';

export interface SinkMail {
  to: string[];
  subject: string;
  text: string;
  html: string;
}

export interface SmtpSink {
  readonly port: number;
  readonly url: string;
  readonly mails: readonly SinkMail[];
  /** The first mail to `address` (case-insensitive) that `matches`, waiting up to `timeoutMs` for it to arrive. */
  waitForMail(address: string, matches?: (mail: SinkMail) => boolean, timeoutMs?: number): Promise<SinkMail>;
  close(): Promise<void>;
}

function addressesOf(mail: ParsedMail): string[] {
  const to = mail.to === undefined ? [] : Array.isArray(mail.to) ? mail.to : [mail.to];
  return to.flatMap((group) => group.value.map((entry) => (entry.address ?? '').toLowerCase()));
}

export async function startSmtpSink(): Promise<SmtpSink> {
  const mails: SinkMail[] = [];
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ['STARTTLS', 'AUTH'],
    logger: false,
    onData(stream, _session, callback) {
      simpleParser(stream)
        .then((parsed) => {
          mails.push({
            to: addressesOf(parsed),
            subject: parsed.subject ?? '',
            text: parsed.text ?? '',
            html: typeof parsed.html === 'string' ? parsed.html : '',
          });
          callback();
        })
        .catch((error: Error) => callback(error));
    },
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.server.address() as AddressInfo).port;
  return {
    port,
    url: `smtp://127.0.0.1:${port}`,
    mails,
    async waitForMail(address, matches = () => true, timeoutMs = 20_000) {
      const wanted = address.toLowerCase();
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const mail = mails.find((candidate) => candidate.to.includes(wanted) && matches(candidate));
        if (mail) return mail;
        if (Date.now() > deadline) {
          throw new Error(
            `no mail to ${address} within ${timeoutMs} ms; the sink holds ${mails.length}: ${mails.map((m) => `${m.to.join(',')} "${m.subject}"`).join('; ')}`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** The first link in a mail's text that starts with `prefix` (its fragment included). */
export function linkIn(mail: SinkMail, prefix: string): string {
  const escaped = prefix.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const found = new RegExp(`${escaped}[^\\s<>"')\\]]*`).exec(`${mail.text}\n${mail.html}`);
  if (!found) throw new Error(`no link starting ${prefix} in the mail "${mail.subject}":\n${mail.text}`);
  return found[0].replace(/&amp;/g, '&');
}
