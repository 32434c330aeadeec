import type { ClaimedMail, EmailOutboxRepository } from '../db/email-outbox.ts';
import type { Clock } from '../security/clock.ts';
import type { MailRenderer } from './mail.ts';

/** What the sender hands to an SMTP server (outbound/smtp.ts in production). */
export interface MailTransport {
  send(mail: {
    from: string;
    to: string;
    subject: string;
    text: string;
    html: string;
    messageId: string;
  }): Promise<void>;
  close(): void;
}

/**
 * One Message-ID per outbox row, the same on every attempt: when a server accepted a mail but the answer was lost (a
 * timeout at the end of DATA), the retry is a copy that receivers can recognise and drop. The creation time keeps ids
 * apart across a database that was reset and counts its rows from 1 again.
 */
export function messageIdOf(mail: Pick<ClaimedMail, 'id' | 'createdAtMs'>, from: string): string {
  const domain = /@([^\s>]+)>?\s*$/.exec(from)?.[1] ?? 'gatehouse.invalid';
  return `<outbox.${mail.id}.${mail.createdAtMs.toString(36)}@${domain}>`;
}

/** A mail the sender reports on: never its payload, link or recipient. */
export interface MailReference {
  mailId: number;
  template: string;
}

/** What the sender tells its owner (the log, the metrics). */
export interface MailSenderEvents {
  sent(mail: MailReference): void;
  /** One failed attempt, reported once; `retryAtMs` undefined when the outbox gave up on the mail. */
  failed(mail: MailReference & { attempts: number }, reason: string, retryAtMs: number | undefined): void;
  /** The outbox could not be read or written (the database), reported once until it can again. */
  outboxUnavailable(error: unknown): void;
  outboxAvailable(): void;
}

export interface MailSenderOptions {
  outbox: Pick<
    EmailOutboxRepository,
    'claimDueMails' | 'renewLease' | 'markMailSent' | 'markMailFailed' | 'releaseMails'
  >;
  renderer: MailRenderer;
  transport: MailTransport;
  from: string;
  clock: Clock;
  events: MailSenderEvents;
  pollIntervalMs?: number;
  batchSize?: number;
  /** How long a claimed mail stays this sender's: longer than one send can take with every SMTP timeout. */
  leaseMs?: number;
}

export interface MailSender {
  /** Starts polling the outbox. */
  start(): void;
  /** Looks at the outbox now rather than at the next poll: call it after committing a queued mail. */
  wake(): void;
  /** Stops polling, lets the send in progress finish (for a few seconds at most), and closes the transport. */
  stop(): Promise<void>;
}

const POLL_INTERVAL_MS = 1000;
const BATCH_SIZE = 10;
/** How long a claimed mail stays one sender's: longer than a send can take with every SMTP timeout at its cap. */
export const MAIL_LEASE_MS = 120_000;
const STOP_WAIT_MS = 5000;

/** Builds the loop that sends the outbox's due mails; it never keeps the process alive by itself. */
export function createMailSender(options: MailSenderOptions): MailSender {
  const { outbox, renderer, transport, from, clock, events } = options;
  const pollIntervalMs = options.pollIntervalMs ?? POLL_INTERVAL_MS;
  const batchSize = options.batchSize ?? BATCH_SIZE;
  const leaseMs = options.leaseMs ?? MAIL_LEASE_MS;
  let started = false;
  let stopping = false;
  let timer: NodeJS.Timeout | undefined;
  let round: Promise<void> | undefined;
  let wokenDuringRound = false;
  let outboxDown = false;

  const nowMs = () => clock.now().getTime();

  const schedule = (delayMs: number) => {
    if (!started || stopping) return;
    clearTimeout(timer);
    timer = setTimeout(runRound, delayMs);
    timer.unref();
  };

  const outboxCall = async <T>(call: () => Promise<T>): Promise<T> => {
    try {
      const result = await call();
      if (outboxDown) {
        outboxDown = false;
        events.outboxAvailable();
      }
      return result;
    } catch (error) {
      if (!outboxDown) {
        outboxDown = true;
        events.outboxUnavailable(error);
      }
      throw error;
    }
  };

  /**
   * Sends the mail under a lease renewed now and every quarter of a lease while the send runs: a batch is sent one
   * mail after another, and a send may outlast one lease with each SMTP timeout within its cap (a server that answers
   * every command just in time), where another sender then claimed the mail and sent it too (found from outside).
   */
  async function sendLeased(claimed: ClaimedMail): Promise<void> {
    let mail = await outboxCall(() => outbox.renewLease(claimed, nowMs(), leaseMs));
    // Another sender holds it now (this one's lease ran out while the batch's earlier mails were sent).
    if (!mail) return;
    let renewing: Promise<unknown> = Promise.resolve();
    const heartbeat = setInterval(() => {
      renewing = renewing.then(async () => {
        const held = mail && (await outbox.renewLease(mail, nowMs(), leaseMs).catch(() => undefined));
        if (held) mail = held;
      });
    }, leaseMs / 4);
    heartbeat.unref();
    try {
      await sendOne(mail, () => mail as ClaimedMail);
    } finally {
      clearInterval(heartbeat);
      await renewing;
    }
  }

  async function sendOne(mail: ClaimedMail, current: () => ClaimedMail): Promise<void> {
    const reference = { mailId: mail.id, template: mail.template };
    let rendered: ReturnType<MailRenderer['render']>;
    try {
      rendered = renderer.render(mail);
    } catch (error) {
      // A payload sealed under a secret no longer configured, or a template this version lacks: no retry mends it.
      const reason = `cannot render: ${(error as Error).name}: ${(error as Error).message}`;
      await outboxCall(() => outbox.markMailFailed(current(), reason, nowMs(), { permanent: true }));
      events.failed({ ...reference, attempts: mail.attempts + 1 }, reason, undefined);
      return;
    }
    try {
      await transport.send({ from, to: mail.recipient, ...rendered, messageId: messageIdOf(mail, from) });
    } catch (error) {
      const reason = (error as Error).message;
      const outcome = await outboxCall(() => outbox.markMailFailed(current(), reason, nowMs()));
      events.failed({ ...reference, attempts: mail.attempts + 1 }, reason, outcome.nextAttemptAtMs);
      return;
    }
    await outboxCall(() => outbox.markMailSent(mail, nowMs()));
    events.sent(reference);
  }

  /** Sends one batch; returns whether it was full (more may be due). */
  async function sendBatch(): Promise<boolean> {
    const mails = await outboxCall(() => outbox.claimDueMails(nowMs(), batchSize, leaseMs));
    for (const [index, mail] of mails.entries()) {
      if (stopping) {
        // Released rather than left leased, so that another instance need not wait out the lease.
        await outboxCall(() => outbox.releaseMails(mails.slice(index)));
        return false;
      }
      await sendLeased(mail);
    }
    return mails.length === batchSize;
  }

  function runRound(): void {
    timer = undefined;
    if (round) {
      wokenDuringRound = true;
      return;
    }
    wokenDuringRound = false;
    round = sendBatch()
      .catch(() => false)
      .then((full) => {
        round = undefined;
        schedule(full || wokenDuringRound ? 0 : pollIntervalMs);
      });
  }

  return {
    start() {
      if (started) return;
      started = true;
      schedule(0);
    },
    wake() {
      if (round) wokenDuringRound = true;
      else schedule(0);
    },
    async stop() {
      stopping = true;
      clearTimeout(timer);
      if (round) {
        let waited: NodeJS.Timeout | undefined;
        await Promise.race([
          round,
          new Promise<void>((resolve) => {
            waited = setTimeout(resolve, STOP_WAIT_MS);
          }),
        ]);
        clearTimeout(waited);
      }
      transport.close();
    },
  };
}
