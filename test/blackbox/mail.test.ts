/**
 * Issue 13, mail delivery from outside: a spawned server with and without SMTP_URL, the `gatehouse mail` commands
 * against its database, on a SQLite file and on PostgreSQL. Mails are queued straight into the outbox here, as the
 * flows do inside their transactions.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createDb, type DbHandle } from '../../src/db/connect.ts';
import { queueMail } from '../../src/db/email-outbox.ts';
import { createSecretBox } from '../../src/security/secret-box.ts';
import { createMailComposer } from '../../src/services/mail.ts';
import { type SmtpInbox, startSmtpInbox } from '../support/smtp-inbox.ts';
import {
  createDatabase,
  DIALECTS,
  GATEHOUSE_SECRET,
  ROOT,
  type RunningServer,
  runUntilExit,
  startServer,
  type TestDatabase,
} from './support/server.ts';

vi.setConfig({ testTimeout: 60_000, hookTimeout: 60_000 });

const PUBLIC_URL = 'http://gatehouse.test';
const composer = createMailComposer(createSecretBox([GATEHOUSE_SECRET]));

function gatehouse(
  args: string[],
  databaseUrl: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['bin/gatehouse.js', ...args],
      {
        cwd: ROOT,
        env: {
          PATH: process.env.PATH ?? '',
          HOME: process.env.HOME ?? '',
          LOG_LEVEL: 'warn',
          DATABASE_URL: databaseUrl,
          GATEHOUSE_SECRET,
        },
        timeout: 45_000,
      },
      (error, stdout, stderr) => {
        resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr });
      },
    );
  });
}

function openOutbox(database: TestDatabase): DbHandle {
  return createDb(
    database.dialect === 'sqlite'
      ? { kind: 'sqlite', path: database.sqlitePath ?? '' }
      : { kind: 'postgres', url: database.url },
  );
}

async function queueReset(handle: DbHandle, to: string) {
  const token = randomBytes(32).toString('base64url');
  const link = `${PUBLIC_URL}/account/reset-password#token=${token}`;
  await queueMail(
    handle.db,
    composer.compose({ userId: null, to, template: 'password_reset', values: { username: 'alice', link } }),
    Date.now(),
  );
  return { token, link };
}

describe('the server refuses SMTP_URL without PUBLIC_URL', () => {
  it('exits 1 at start, naming PUBLIC_URL and never the SMTP password', async () => {
    const result = await runUntilExit({
      DATABASE_URL: 'sqlite::memory:',
      SMTP_URL: 'smtp://mailer:hunter2-secret@127.0.0.1:2525',
    });
    expect(result.timedOut).toBe(false);
    expect(result.code).toBe(1);
    expect(result.output).toMatch(/PUBLIC_URL is required when SMTP_URL is set/);
    expect(result.output).not.toContain('hunter2-secret');
  });
});

describe.each(DIALECTS)('mail without SMTP_URL, read with gatehouse mail (%s)', (dialect) => {
  let database: TestDatabase;
  let server: RunningServer;
  let handle: DbHandle;
  beforeAll(async () => {
    database = await createDatabase(dialect);
    server = await startServer({ databaseUrl: database.url, env: { PUBLIC_URL } });
    handle = openOutbox(database);
  });
  afterAll(async () => {
    await handle?.close();
    await server?.stop();
    await database?.drop();
  });

  it('says once at start that mails stay in the outbox, and how to read them', async () => {
    const notesNow = () =>
      server
        .output()
        .split('\n')
        .filter((line) => line.includes('mails stay in the outbox'));
    // The line is logged once the server listens; the log's asynchronous writer may hand it over just after the
    // server first answered.
    for (let waited = 0; notesNow().length === 0 && waited < 5000; waited += 50) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const notes = notesNow();
    expect(notes).toHaveLength(1);
    expect(notes[0]).toContain('gatehouse -- mail list');
  });

  it('lists queued mails as a table or JSON and shows one with its link; exit codes 0, 1, 2', async () => {
    const to = `outbox-${dialect}@example.com`;
    const { token, link } = await queueReset(handle, to);
    await new Promise((resolve) => setTimeout(resolve, 1500));

    const table = await gatehouse(['mail', 'list'], database.url);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/^ID +RECIPIENT +TEMPLATE +CREATED +STATUS +ATTEMPTS$/m);
    expect(table.stdout).toMatch(new RegExp(`^\\d+ +${to} +password_reset +\\S+ +queued +0$`, 'm'));
    expect(table.stdout).not.toContain(token);

    const listed = JSON.parse(
      (await gatehouse(['mail', 'list', '--json', '--limit', '5'], database.url)).stdout,
    );
    const [mail] = listed.mails;
    expect(mail).toMatchObject({ recipient: to, template: 'password_reset', status: 'queued', attempts: 0 });
    expect(listed.next).toBeNull();

    const shown = await gatehouse(['mail', 'show', String(mail.id)], database.url);
    expect(shown.code, shown.stderr).toBe(0);
    expect(shown.stdout).toMatch(/^From: +Gatehouse <no-reply@localhost>$/m);
    expect(shown.stdout).toMatch(new RegExp(`^To: +${to}$`, 'm'));
    expect(shown.stdout).toMatch(/^Subject: +Reset your Gatehouse password$/m);
    expect(shown.stdout).toContain(link);

    const json = JSON.parse(
      (await gatehouse(['mail', 'show', String(mail.id), '--json'], database.url)).stdout,
    );
    expect(json).toMatchObject({ id: mail.id, recipient: to, subject: 'Reset your Gatehouse password' });
    expect(json.text).toContain(link);
    expect(json.html).toContain(`href="${link}"`);

    const missing = await gatehouse(['mail', 'show', '999999'], database.url);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('no mail 999999');
    for (const args of [
      ['mail', 'show', 'abc'],
      ['mail', 'show'],
      ['mail', 'list', '--limit', '0'],
      ['mail'],
    ]) {
      const refused = await gatehouse(args, database.url);
      expect(refused.code, args.join(' ')).toBe(2);
      expect(refused.stdout).toBe('');
    }
    expect(server.output()).not.toContain(token);
  });
});

describe.each(DIALECTS)('mail through SMTP from a spawned server (%s)', (dialect) => {
  let database: TestDatabase;
  let inbox: SmtpInbox;
  let server: RunningServer;
  let handle: DbHandle;
  beforeAll(async () => {
    database = await createDatabase(dialect);
    inbox = await startSmtpInbox();
    server = await startServer({
      databaseUrl: database.url,
      env: { SMTP_URL: inbox.url, PUBLIC_URL, MAIL_FROM: 'Gatehouse <accounts@gatehouse.test>' },
    });
    handle = openOutbox(database);
  });
  afterAll(async () => {
    await handle?.close();
    await server?.stop();
    await inbox?.stop();
    await database?.drop();
  });

  it('delivers a queued mail, then keeps neither its link in the outbox nor its token in the log', async () => {
    const to = `smtp-${dialect}@example.com`;
    const { token, link } = await queueReset(handle, to);
    const received = await inbox.next({ to, timeoutMs: 15_000 });
    expect(received.from).toBe('accounts@gatehouse.test');
    expect(received.text).toContain(link);
    expect(received.subject).not.toContain(token);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const listed = JSON.parse((await gatehouse(['mail', 'list', '--json'], database.url)).stdout);
    const mail = listed.mails.find((each: { recipient: string }) => each.recipient === to);
    expect(mail).toMatchObject({ status: 'sent', attempts: 0 });
    const shown = await gatehouse(['mail', 'show', String(mail.id)], database.url);
    expect(shown.code).toBe(0);
    expect(shown.stdout).not.toContain(token);
    expect(shown.stderr).toContain('not kept once sent');
    expect(inbox.all().filter((each) => each.envelopeTo.includes(to))).toHaveLength(1);
    expect(server.output()).not.toContain(token);
    expect(server.output()).not.toContain('mails stay in the outbox');
  });
});
