import type { Transporter } from 'nodemailer';

/** A mail as an SMTP server receives it. */
export interface OutgoingMail {
  from: string;
  to: string;
  subject: string;
  text: string;
  html: string;
  messageId: string;
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
// a stopping process) that long.
const TIMEOUTS = {
  connectionTimeout: 10_000,
  greetingTimeout: 10_000,
  socketTimeout: 10_000,
  dnsTimeout: 10_000,
};

/**
 * The longest any one timeout may be, even when the URL's query asks for more: a dead server frees a send (and a
 * stopping process) within it. A send's lease is renewed while it runs (services/mail-sender.ts).
 */
export const MAX_SMTP_TIMEOUT_MS = 25_000;

/** Nodemailer's options for SMTP_URL: the URL, with its query's timeouts taken out, shortened to the cap, and set. */
export function smtpTransportOptions(smtpUrl: string): { url: string } & typeof TIMEOUTS {
  const url = new URL(smtpUrl);
  const timeouts = { ...TIMEOUTS };
  const asked = new Set<string>();
  for (const name of Object.keys(TIMEOUTS) as (keyof typeof TIMEOUTS)[]) {
    const value = Number(url.searchParams.get(name));
    if (url.searchParams.has(name) && Number.isFinite(value) && value > 0) {
      timeouts[name] = value;
      asked.add(name);
    }
    timeouts[name] = Math.min(timeouts[name], MAX_SMTP_TIMEOUT_MS);
    url.searchParams.delete(name);
  }
  // nodemailer counts the greeting within the connection's time: a longer greeting asked alone would be cut to the
  // connection's default (found from outside).
  if (asked.has('greetingTimeout') && !asked.has('connectionTimeout'))
    timeouts.connectionTimeout = Math.max(timeouts.connectionTimeout, timeouts.greetingTimeout);
  // The URL as given when it held no timeout: URL serialisation would otherwise add a trailing slash.
  const unchanged = url.search === new URL(smtpUrl).search;
  return { url: unchanged ? smtpUrl : url.toString(), ...timeouts };
}

/**
 * Sends through the server SMTP_URL names: smtps:// is TLS from the start, smtp:// upgrades with STARTTLS when the
 * server offers it (`?requireTLS=true` insists), and credentials come from the URL.
 */
export function createSmtpTransport(smtpUrl: string): SmtpTransport {
  const options = smtpTransportOptions(smtpUrl);
  // Nodemailer is loaded at the first mail: 5 MB of heap that a server which sends none never holds.
  let transport: Promise<Transporter> | undefined;
  const open = () => {
    transport ??= import('nodemailer').then(({ default: nodemailer }) => nodemailer.createTransport(options));
    return transport;
  };
  const secrets = secretsOf(smtpUrl);
  return {
    async send(mail) {
      try {
        await (await open()).sendMail(mail);
      } catch (error) {
        throw new SmtpSendError(describeSmtpError(error, secrets));
      }
    },
    close: () => {
      transport?.then(
        (opened) => opened.close(),
        () => {},
      );
    },
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
  return withoutAddressesOrTokens(text).replace(/[\r\n]+/g, ' ');
}

// Runs of text between separators, each looked at once: a pattern that searched for `@` or `://` from every start
// took seconds on a 40 KB run without either (review).
const WORD = /[^\s<>"'(),;]+/g;
// A quoted local part (`"w.x"@example.org`) joins the address it begins (found from outside: it stayed readable).
const QUOTED_LOCAL_PART = /"[^"\r\n]{0,64}"@/g;
const SCHEME_CHARACTER = /[A-Za-z0-9+.-]/;
const TOKEN_LIKE = /[A-Za-z0-9_-]{20,}/g;
// Longer than the server's words are worth: a reply is stored cut to 500 characters anyway.
const MAX_REPLY_LENGTH = 2000;

/**
 * A server's refusal may quote the recipient (`550 <user@…>: User unknown`) or the message (a content filter's `554 …
 * for https://…#token=…`), and the reason is logged and stored: found from outside, a reset link stayed in the outbox
 * after its mail was sent, and reset the password. The server's words stay; an address goes, a link keeps only its
 * origin, and a run of a token's alphabet goes when it is as long as a token and holds a digit or mixes its letters'
 * case as no word does, or when it is shorter (20 characters or more), holds a digit and is no label of a host name.
 */
export function withoutAddressesOrTokens(reply: string): string {
  return reply
    .slice(0, MAX_REPLY_LENGTH)
    .replace(QUOTED_LOCAL_PART, 'quoted@')
    .replace(WORD, (word) => {
      const separator = word.indexOf('://');
      if (separator > 0) return `[link to ${originOf(word, separator)}]`;
      return word.includes('@') || /%40/i.test(word) ? '[address]' : word;
    })
    .replace(TOKEN_LIKE, (run, offset: number, text: string) => {
      const hasDigit = /\d/.test(run);
      // As long as the tokens Gatehouse mails (43 characters), a run goes whatever stands beside it: a refusal's
      // sentence ends with a full stop after it (found from outside: `… suspicious string TOKEN.` was kept).
      if (run.length >= 32) return hasDigit || /[a-z][A-Z]/.test(run) ? '[redacted]' : run;
      return hasDigit && !inHostName(text, offset, run.length) ? '[redacted]' : run;
    });
}

/** The scheme and host of the link whose `://` is at `separator`; the host stays out when it names a user. */
function originOf(word: string, separator: number): string {
  let start = separator;
  while (start > 0 && SCHEME_CHARACTER.test(word[start - 1] as string)) start -= 1;
  const rest = word.slice(separator + 3);
  const host = rest.slice(0, rest.search(/[/?#]|$/));
  const scheme = word.slice(start, separator);
  return host.includes('@') || host === '' ? `${scheme}://…` : `${scheme}://${host}`;
}

const ALPHANUMERIC = /[A-Za-z0-9]/;

/** Whether the run at `offset` is a label of a host name: a dot joins it to another label on either side. */
function inHostName(text: string, offset: number, length: number): boolean {
  const joined = (dot: number, beyond: number) =>
    text[dot] === '.' && beyond >= 0 && ALPHANUMERIC.test(text[beyond] ?? '');
  return joined(offset - 1, offset - 2) || joined(offset + length, offset + length + 1);
}
