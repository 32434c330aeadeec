import type { EmailOutboxRepository, QueuedMail } from '../db/email-outbox.ts';
import type { Clock } from '../security/clock.ts';
import type { SecretBox } from '../security/secret-box.ts';
import {
  type MailTemplate,
  type MailValues,
  type RenderedMail,
  renderMailTemplate,
} from './mail-templates.ts';

export type { MailTemplate, MailValues } from './mail-templates.ts';

export interface MailToCompose {
  userId: number | null;
  to: string;
  template: MailTemplate;
  values: MailValues;
}

/** Turns a mail a use case wants sent into an outbox row: its values sealed under GATEHOUSE_SECRET. */
export interface MailComposer {
  compose(mail: MailToCompose): QueuedMail;
}

/** The sealing context of an outbox payload: a payload copied onto another mail's row does not open. */
export const outboxSealContext = (template: string, recipient: string): string =>
  `email_outbox:${template}:${recipient}`;

export function createMailComposer(box: SecretBox): MailComposer {
  return {
    compose: ({ userId, to, template, values }) => ({
      userId,
      recipient: to,
      template,
      sealedPayload: box.seal(JSON.stringify(values), outboxSealContext(template, to)),
    }),
  };
}

export const MAIL_TEMPLATES: readonly MailTemplate[] = [
  'verify_email',
  'password_reset',
  'password_changed',
  'email_change_requested',
  'email_changed',
  'mfa_changed',
];

export const isMailTemplate = (value: string): value is MailTemplate =>
  (MAIL_TEMPLATES as readonly string[]).includes(value);

/** An outbox mail as it is stored: whom to, which template, the sealed values. */
export interface StoredMail {
  recipient: string;
  template: string;
  sealedPayload: string;
}

/** Opens an outbox mail's sealed values and renders its template. */
export interface MailRenderer {
  /** Returns the subject and bodies; throws when the payload does not open here or names no template. */
  render(mail: StoredMail): RenderedMail;
}

export function createMailRenderer(box: SecretBox): MailRenderer {
  return {
    render: ({ recipient, template, sealedPayload }) => {
      if (!isMailTemplate(template)) throw new Error(`no mail template named ${JSON.stringify(template)}`);
      const values = JSON.parse(
        box.open(sealedPayload, outboxSealContext(template, recipient)),
      ) as MailValues;
      return renderMailTemplate(template, values);
    },
  };
}

/** What a use case that sends mail needs: the composer, where links point, and a nudge for the sender. */
export interface MailDelivery {
  composer: MailComposer;
  /** PUBLIC_URL (or http://localhost:PORT) without a trailing slash: links are built from it, never from a request. */
  publicUrl: string;
  /** Call once the transaction that queued a mail has committed: the sender looks now instead of at its next poll. */
  mailQueued(): void;
}

const DAY_MS = 86_400_000;
const PRUNE_BATCH_SIZE = 1000;

/**
 * The outbox keeps a mail as long as the audit trail keeps an event (AUDIT_RETENTION_DAYS): a sent mail's row names a
 * person's address, and one still queued that old (no SMTP_URL all along, say) carries a link long dead.
 */
export function createOutboxRetention(deps: {
  outbox: Pick<EmailOutboxRepository, 'deleteMailsCreatedBefore'>;
  clock: Clock;
  retentionDays: number;
}) {
  return {
    /** Deletes the mails older than the retention; how many. */
    async pruneOldMails(batchSize = PRUNE_BATCH_SIZE): Promise<number> {
      const beforeMs = deps.clock.now().getTime() - deps.retentionDays * DAY_MS;
      let pruned = 0;
      for (;;) {
        const deleted = await deps.outbox.deleteMailsCreatedBefore(beforeMs, batchSize);
        pruned += deleted;
        if (deleted < batchSize) return pruned;
      }
    },
  };
}
