/**
 * Swagger UI at /docs, in a real Chromium against a spawned server: the page works under its content security
 * policy, the OAuth2 password flow authorizes, and "Try it out" on GET /conversation shows the caller's conversation.
 * Needs Debian's chromium at /usr/bin/chromium (`apt-get install -y chromium`): skipped with a warning when it is
 * missing, except with CI=true, where a missing browser is a failure.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type BrowserContext, chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { registerUser } from '../blackbox/support/client.ts';
import { DIALECTS, ROOT, useServer } from '../blackbox/support/server.ts';
import { CHROMIUM, CHROMIUM_FLAGS, requireChromium, skipWithoutChromium } from '../support/chromium.ts';

const SCREENSHOTS = path.join(ROOT, 'test-results');

describe.skipIf(skipWithoutChromium('the browser test of /docs')).each(DIALECTS)(
  'Swagger UI in Chromium (%s)',
  (dialect) => {
    const ctx = useServer(dialect);
    let userDataDir: string;
    let browser: BrowserContext;
    beforeAll(async () => {
      requireChromium();
      userDataDir = mkdtempSync(path.join(os.tmpdir(), 'gatehouse-chromium-'));
      browser = await chromium.launchPersistentContext(userDataDir, {
        executablePath: CHROMIUM,
        headless: true,
        args: CHROMIUM_FLAGS,
      });
    }, 60_000);
    afterAll(async () => {
      await browser?.close();
      if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
    });

    it('authorizes with the password flow, then Try it out on GET /conversation answers 200 with the body, and no CSP violation', async () => {
      const user = await registerUser(ctx);
      const page = await browser.newPage();
      const consoleLines: string[] = [];
      page.on('console', (message) => consoleLines.push(`${message.type()}: ${message.text()}`));
      page.on('pageerror', (error) => consoleLines.push(`pageerror: ${error.message}`));
      // Chromium reports each violation on the console too; the DOM event says which directive was violated.
      await page.addInitScript(`
      window.cspViolations = [];
      document.addEventListener('securitypolicyviolation', (event) =>
        window.cspViolations.push(event.violatedDirective + ' ' + event.blockedURI));
    `);
      try {
        const loaded = await page.goto(ctx.url('/docs'));
        expect(loaded?.status()).toBe(200);
        expect(loaded?.headers()['content-security-policy']).toMatch(/script-src 'self'/);

        await page.locator('button.authorize').first().click();
        const dialog = page.locator('.dialog-ux .modal-ux');
        await dialog.locator('#oauth_username').fill(user.username);
        await dialog.locator('#oauth_password').fill(user.password);
        await dialog.locator('button.authorize').click();
        // Swagger UI offers "Logout" once the token endpoint has answered with a token.
        await expect.poll(() => dialog.locator('button.authorize', { hasText: 'Logout' }).count()).toBe(1);
        await dialog.locator('button.close-modal').click();

        // By its id: /conversation/messages is an operation of the same tag.
        const operation = page.locator('#operations-conversation-get_conversation');
        await operation.locator('.opblock-summary').click();
        await operation.locator('button.try-out__btn').click();
        await operation.locator('button.execute').click();
        const live = operation.locator('.live-responses-table');
        await expect
          .poll(() => live.locator('.response .response-col_status').first().textContent())
          .toMatch(/200/);
        const body = await live
          .locator('.response-col_description .microlight, .response-col_description pre')
          .first()
          .textContent();
        expect(JSON.parse(body ?? '')).toEqual({
          conversation: 'This is a secure conversation',
          current_user: user.username,
        });

        const violations = await page.evaluate('window.cspViolations');
        expect(violations).toEqual([]);
        expect(consoleLines.filter((line) => /content security policy/i.test(line))).toEqual([]);
        expect(consoleLines.filter((line) => /^(error|pageerror):/.test(line))).toEqual([]);
      } catch (error) {
        mkdirSync(SCREENSHOTS, { recursive: true });
        const file = path.join(SCREENSHOTS, `docs-${dialect}-${Date.now()}.png`);
        await page.screenshot({ path: file, fullPage: true }).catch(() => {});
        throw new Error(
          `${(error as Error).message}\nscreenshot: ${file}\nconsole:\n${consoleLines.join('\n')}`,
          {
            cause: error,
          },
        );
      } finally {
        await page.close();
      }
    }, 90_000);
  },
);
