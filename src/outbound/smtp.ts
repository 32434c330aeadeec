import nodemailer from 'nodemailer';

/** A mail as an SMTP server receives it. */
export interface OutgoingMail {
  from: string;
  to: string;
  subject: string;
  text: string;
  html: string;
}

export interface SmtpTransport {
  /** Resolves once the server accepted the mail; rejects with an SmtpSendError. */
  send(mail: OutgoingMail): Promise<void>;
  close(): void;
}

/** Why a send failed, in words that may be stored and logged: no password, no message content. */
export class SmtpSendError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SmtpSendError';
  }
}

// Nodemailer waits two minutes to connect and ten for a quiet socket by default: a dead server would hold a send (and
// a stopping process) that long. The URL's own query (?socketTimeout=…) still wins.
const TIMEOUTS = { connectionTimeout: 10_000, greetingTimeout: 10_000, socketTimeout: 10_000 };

/**
 * Sends through the server SMTP_URL names: smtps:// is TLS from the start, smtp:// upgrades with STARTTLS when the
 * server offers it (`?requireTLS=true` insists), and credentials come from the URL.
 */
export function createSmtpTransport(smtpUrl: string): SmtpTransport {
  const transport = nodemailer.createTransport({ url: smtpUrl, ...TIMEOUTS });
  const secrets = secretsOf(smtpUrl);
  return {
    async send(mail) {
      try {
        await transport.sendMail(mail);
      } catch (error) {
        throw new SmtpSendError(describeSmtpError(error, secrets));
      }
    },
    close: () => transport.close(),
  };
}

function secretsOf(smtpUrl: string): string[] {
  const url = URL.parse(smtpUrl);
  const secrets = [smtpUrl];
  if (url?.password) {
    secrets.push(url.password);
    try {
      secrets.push(decodeURIComponent(url.password));
    } catch {
      // a malformed escape: the raw form is enough
    }
  }
  return secrets.filter((secret) => secret.length >= 3).sort((a, b) => b.length - a.length);
}

/** The error's code, the server's status and its message, with anything of SMTP_URL's password taken out. */
function describeSmtpError(error: unknown, secrets: readonly string[]): string {
  const { code, responseCode, message } = error as {
    code?: unknown;
    responseCode?: unknown;
    message?: unknown;
  };
  let text = [
    typeof code === 'string' ? code : undefined,
    typeof responseCode === 'number' ? String(responseCode) : undefined,
    typeof message === 'string' ? message : String(error),
  ]
    .filter((part) => part !== undefined)
    .join(' ');
  for (const secret of secrets) text = text.split(secret).join('[redacted]');
  return text.replace(/[\r\n]+/g, ' ');
}
