import type { QueuedMail } from '../db/email-outbox.ts';
import type { SecretBox } from '../security/secret-box.ts';

/** Every mail Gatehouse sends. */
export type MailTemplate =
  | 'verify_email'
  | 'password_reset'
  | 'password_changed'
  | 'email_change_requested'
  | 'email_changed';

/** What a template fills in. A link carries a token: it is sealed in the outbox and never logged. */
export interface MailValues {
  username: string;
  link?: string;
  newEmail?: string;
}

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
