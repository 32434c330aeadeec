import type { Config } from '../config.ts';
import {
  createEmailOutboxRepository,
  type EmailOutboxRepository,
  type OutboxMail,
} from '../db/email-outbox.ts';
import { createSecretBox } from '../security/secret-box.ts';
import { createMailRenderer, type MailRenderer } from '../services/mail.ts';
import type { RenderedMail } from '../services/mail-templates.ts';
import { openDatabase } from './open-database.ts';
import { type CommandIo, printFields, printJson, printTable } from './output.ts';
import { type CommandInput, EXIT_OK, EXIT_REFUSED, EXIT_USAGE, readLimit } from './users.ts';

const DEFAULT_PAGE_SIZE = 20;
const MAX_PAGE_SIZE = 100;

// Every control character but the line breaks of a body: a terminal would obey them.
const CONTROLS_BUT_NEWLINES = /(?!\n)[\p{Cc}\p{Cs}]/gu;

async function withOutbox(
  config: Config,
  io: CommandIo,
  use: (outbox: EmailOutboxRepository, renderer: MailRenderer) => Promise<number>,
): Promise<number> {
  const { handle } = await openDatabase(config, (line) => io.warn(`warning: ${line}`), { existing: true });
  try {
    return await use(
      createEmailOutboxRepository(handle.db, handle.dialect),
      createMailRenderer(createSecretBox(config.secrets)),
    );
  } finally {
    await handle.close();
  }
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

const mailRecord = (mail: OutboxMail) => ({
  id: mail.id,
  recipient: mail.recipient,
  template: mail.template,
  status: mail.status,
  attempts: mail.attempts,
  created_at: iso(mail.createdAtMs),
  sent_at: iso(mail.sentAtMs),
  next_attempt_at: mail.status === 'queued' ? iso(mail.sendAfterMs) : null,
  last_error: mail.lastError,
});

/** `gatehouse mail list`: the outbox, newest first. */
export async function listMailsCommand(input: CommandInput): Promise<number> {
  const limit = readLimit(input, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);
  if (limit === undefined) return EXIT_USAGE;
  const before = input.options.before as string | undefined;
  if (before !== undefined && !/^[1-9][0-9]{0,15}$/.test(before)) {
    input.io.warn('gatehouse: --before must be a mail id, as the previous page said');
    return EXIT_USAGE;
  }
  return withOutbox(input.config, input.io, async (outbox) => {
    const page = await outbox.listMails({ limit, ...(before ? { beforeId: Number(before) } : {}) });
    if (input.options.json) {
      printJson(input.io, { mails: page.mails.map(mailRecord), next: page.next ?? null });
      return EXIT_OK;
    }
    printTable(
      input.io,
      ['id', 'recipient', 'template', 'created', 'status', 'attempts'],
      page.mails.map((mail) => [
        mail.id,
        mail.recipient,
        mail.template,
        new Date(mail.createdAtMs),
        mail.status,
        mail.attempts,
      ]),
      'no mails in the outbox',
    );
    if (page.next !== undefined) input.io.warn(`more: add --before ${page.next}`);
    return EXIT_OK;
  });
}

/** `gatehouse mail show ID`: one mail's headers and text, link included, for local development. */
export async function showMailCommand(input: CommandInput): Promise<number> {
  const idText = input.positionals[0] ?? '';
  if (!/^[1-9][0-9]{0,15}$/.test(idText)) {
    input.io.warn('gatehouse: ID must be a mail id, as `gatehouse mail list` shows it');
    return EXIT_USAGE;
  }
  return withOutbox(input.config, input.io, async (outbox, renderer) => {
    const mail = await outbox.findMailById(Number(idText));
    if (!mail) {
      input.io.warn(`gatehouse: no mail ${idText} in the outbox`);
      return EXIT_REFUSED;
    }
    let rendered: RenderedMail | undefined;
    let problem: string | undefined;
    if (mail.sealedPayload === null) {
      problem = 'sent: its content (and any link) is not kept once sent';
    } else {
      try {
        rendered = renderer.render({ ...mail, sealedPayload: mail.sealedPayload });
      } catch (error) {
        problem = `cannot open it with this GATEHOUSE_SECRET (${(error as Error).message})`;
      }
    }
    if (input.options.json) {
      printJson(input.io, {
        ...mailRecord(mail),
        from: input.config.mail.from,
        subject: rendered?.subject ?? null,
        text: rendered?.text ?? null,
        html: rendered?.html ?? null,
      });
    } else {
      printFields(input.io, [
        ['From', input.config.mail.from],
        ['To', mail.recipient],
        ['Subject', rendered?.subject],
        ['Template', mail.template],
        ['Status', mail.status],
        ['Created', new Date(mail.createdAtMs)],
        ['Attempts', mail.attempts],
        ...(mail.lastError !== null ? ([['Last error', mail.lastError]] as const) : []),
        ...(mail.sentAtMs !== null ? ([['Sent', new Date(mail.sentAtMs)]] as const) : []),
      ]);
      if (rendered) {
        input.io.print('');
        for (const line of rendered.text.replace(CONTROLS_BUT_NEWLINES, '?').trimEnd().split('\n')) {
          input.io.print(line);
        }
      }
    }
    if (problem !== undefined && rendered === undefined) {
      input.io.warn(`gatehouse: mail ${mail.id}: ${problem}`);
      return mail.sealedPayload === null ? EXIT_OK : EXIT_REFUSED;
    }
    return EXIT_OK;
  });
}
