/**
 * A Gatehouse server that mails to an SMTP sink in this process, reached at http://localhost:PORT (its PUBLIC_URL, the
 * origin its mails' links and passkeys name), and a Chromium to open it: what the suites of the pages that mails link
 * to need before their first test.
 */
import type { Browser } from 'playwright-core';
import {
  createDatabase,
  type Dialect,
  getFreePort,
  type RunningServer,
  startServer,
} from '../../blackbox/support/server.ts';
import { requireChromium } from '../../support/chromium.ts';
import { launchChromium } from './page.ts';
import { type SmtpSink, startSmtpSink } from './smtp-sink.ts';

export interface MailingServer {
  sink: SmtpSink;
  server: RunningServer;
  browser: Browser;
  publicUrl: string;
  /** Closes the browser, stops the server, drops its database and closes the sink. */
  stop(): Promise<void>;
}

/** Starts them; `env` adds settings, given the public URL the server gets. */
export async function startMailingServer(
  dialect: Dialect,
  env: (publicUrl: string) => Record<string, string> = () => ({}),
): Promise<MailingServer> {
  requireChromium();
  const sink = await startSmtpSink();
  const db = await createDatabase(dialect);
  const port = await getFreePort();
  const publicUrl = `http://localhost:${port}`;
  const server = await startServer({
    databaseUrl: db.url,
    port,
    env: { SMTP_URL: sink.url, PUBLIC_URL: publicUrl, ...env(publicUrl) },
  });
  const browser = await launchChromium();
  return {
    sink,
    server,
    browser,
    publicUrl,
    async stop() {
      await browser.close();
      try {
        await server.stop();
      } finally {
        await db.drop();
        await sink.close();
      }
    },
  };
}
