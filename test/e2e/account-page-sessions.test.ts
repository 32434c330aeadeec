/**
 * The account page when its session changes under it: another tab signs in as another account (the refresh cookie
 * is the browser's, not the tab's), and a silent refresh refused for a while (429) rather than for good.
 */
import type { Page } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { getWithToken, login, postJson, registerUser } from '../blackbox/support/client.ts';
import { DIALECTS, useServer } from '../blackbox/support/server.ts';
import { skipWithoutChromium } from '../support/chromium.ts';
import {
  expectSignedIn,
  expectSignedOut,
  inPage,
  listTexts,
  type PageRun,
  signInWithForm,
  useChromium,
} from './support/page.ts';

const status = (page: Page) => page.locator('#status').textContent();

describe.skipIf(skipWithoutChromium('the account page sessions suite')).each(DIALECTS)(
  'the account page when its session changes (%s)',
  (dialect) => {
    // Two-second access tokens: a silent refresh comes soon after a sign-in. Three refreshes a minute per session:
    // the fourth is refused 429 for a while.
    const ctx = useServer(dialect, { ACCESS_TOKEN_TTL_SECONDS: '2', REFRESH_PER_FAMILY: '3/60s' });
    const chromium = useChromium();
    const run = (name: string, steps: (run: PageRun) => Promise<void>) =>
      inPage(chromium.browser, ctx.url(''), `${dialect}-${name}`, steps);

    /**
     * Signs `page` in as a new X (then runs `meanwhile` there), then another tab of the same browser signs out and in
     * as a new Y.
     */
    const switchAccountInAnotherTab = async (
      { page, context }: PageRun,
      meanwhile: (x: { username: string; password: string }) => Promise<void> = async () => {},
    ) => {
      const x = await registerUser(ctx);
      const y = await registerUser(ctx);
      await page.goto('/');
      await signInWithForm(page, x.username, x.password);
      await expectSignedIn(page, x.username);
      await meanwhile(x);
      const other = await context.newPage();
      await other.goto(ctx.url('/'));
      await expectSignedIn(other, x.username);
      await other.getByRole('button', { name: 'Sign out', exact: true }).click();
      await expectSignedOut(other);
      await signInWithForm(other, y.username, y.password);
      await expectSignedIn(other, y.username);
      return { x, y };
    };

    // Found from outside: the first tab, still showing X, refreshed from the cookie that the second tab's sign-in as Y
    // had replaced, and posted its message into Y's conversation ("Sign out everywhere" there signed Y out).
    it('shows the account another tab signed in as, without acting for it in the name of the one it showed', () =>
      run('tab-switch', async ({ page, context }) => {
        const { x, y } = await switchAccountInAnotherTab({ page, context });

        await page.getByLabel('New message').fill('posted from the first tab');
        await page.getByRole('button', { name: 'Add message' }).click();
        await expect.poll(() => page.locator('#who-name').textContent()).toBe(y.username);
        await expect.poll(() => status(page)).toMatch(/another account/i);
        for (const someone of [x, y]) {
          const token = await login(ctx, someone.username, someone.password);
          const conversation = await getWithToken(ctx.url('/conversation/messages'), token);
          expect(conversation.text).not.toContain('posted from the first tab');
        }
        expect(await listTexts(page, '#message-list .message-text')).not.toContain(
          'posted from the first tab',
        );
      }));

    // Found from outside: the first account's authenticator key (and, once set up, its recovery codes) stayed on
    // screen under the name of the account another tab had signed in.
    it("takes the first account's authenticator key and drafts off the page when another tab signs in another", () =>
      run('tab-switch-secrets', async ({ page, context }) => {
        const { y } = await switchAccountInAnotherTab({ page, context }, async (x) => {
          await page.locator('#totp-start-password').fill(x.password);
          await page.getByRole('button', { name: 'Set up an authenticator app' }).click();
          await page.locator('#totp-setup').waitFor({ state: 'visible' });
          expect(((await page.locator('#totp-secret').textContent()) ?? '').trim()).not.toBe('');
        });

        await page.getByLabel('New message').fill('a draft of the first account');
        await page.getByRole('button', { name: 'Add message' }).click();
        await expect.poll(() => page.locator('#who-name').textContent()).toBe(y.username);
        expect(await page.locator('#totp-setup').isHidden()).toBe(true);
        expect(((await page.locator('#totp-secret').textContent()) ?? '').trim()).toBe('');
        expect(await page.getByLabel('New message').inputValue()).toBe('');
      }));

    // Found in review: a second request already on its way when the first one's refresh brought the other account
    // compared the account after that refresh with itself, and went out in the new account's name.
    it('sends none of several requests in flight in the name of the account another tab signed in', () =>
      run('tab-switch-two', async ({ page, context }) => {
        const { y } = await switchAccountInAnotherTab({ page, context });

        // The sign-out everywhere, sent as X, is held until the message's refresh has brought Y's tokens back.
        const refreshed = page.waitForResponse(
          (response) => response.url().endsWith('/token') && response.request().method() === 'POST',
        );
        const heldAnswered = page.waitForResponse((response) => response.url().endsWith('/logout/all'));
        await page.route('**/logout/all', async (route) => {
          await refreshed;
          await new Promise((resolve) => setTimeout(resolve, 300));
          await route.continue();
        });
        await page.getByLabel('New message').fill('posted from the first tab');
        await page.getByRole('button', { name: 'Sign out everywhere' }).click();
        await page.getByRole('button', { name: 'Add message' }).click();
        await heldAnswered;
        await expect.poll(() => status(page)).toMatch(/another account/i);
        // Room for what the page might send after the held request's refusal (it had sent it again as Y).
        await page.waitForTimeout(1000);
        await expect.poll(() => page.locator('#who-name').textContent()).toBe(y.username);
        expect(await page.locator('#signed-in').isVisible()).toBe(true);
        // Y's session, the other tab's, lives: nothing signed it out (beside it, the one this check opens).
        const token = await login(ctx, y.username, y.password);
        const listed = await getWithToken(ctx.url('/users/me/sessions'), token);
        expect(listed.json.sessions).toHaveLength(2);
        const conversation = await getWithToken(ctx.url('/conversation/messages'), token);
        expect(conversation.text).not.toContain('posted from the first tab');
      }));

    // Found from outside: the page answered "Not Found" and kept the row.
    it('says a session it lists had already ended when asked to end it, and draws the list again', () =>
      run('stale-session', async ({ page }) => {
        const user = await registerUser(ctx);
        const other = await postJson(ctx.url('/token'), { username: user.username, password: user.password });
        expect(other.status).toBe(200);
        await page.goto('/');
        await signInWithForm(page, user.username, user.password);
        await expectSignedIn(page, user.username);
        const sessions = page.locator('#session-list > li');
        await expect.poll(() => sessions.count()).toBe(2);
        const loggedOut = await fetch(ctx.url('/logout'), {
          method: 'POST',
          headers: { authorization: `Bearer ${other.json.access_token}`, 'content-type': 'application/json' },
          body: JSON.stringify({ refresh_token: other.json.refresh_token }),
        });
        expect(loggedOut.status).toBeLessThan(300);
        await page
          .locator('#session-list')
          .getByRole('button', { name: /^End session/ })
          .click();
        await expect.poll(() => status(page)).toMatch(/already ended/);
        await expect.poll(() => sessions.count()).toBe(1);
      }));

    it('keeps the account on screen when a silent refresh is refused for a while, and says when to retry', () =>
      run('refresh-429', async ({ page }) => {
        const user = await registerUser(ctx);
        await page.goto('/');
        await signInWithForm(page, user.username, user.password);
        await expectSignedIn(page, user.username);
        // The reloads spend the session's three refreshes of the minute; the next, once the token expired, is a 429.
        for (let reload = 0; reload < 3; reload += 1) {
          await page.reload();
          await expectSignedIn(page, user.username);
        }
        // Past the 2 s lifetime and the 1 s of clock tolerance the server allows.
        await page.waitForTimeout(4000);
        await page.getByLabel('New message').fill('after the token expired');
        await page.getByRole('button', { name: 'Add message' }).click();
        const error = page.locator('#message-form-error');
        await error.waitFor({ state: 'visible' });
        expect(await error.textContent()).toMatch(/retry in \d+ s/);
        expect(await page.locator('#signed-in').isVisible()).toBe(true);
        expect(await page.getByLabel('New message').inputValue()).toBe('after the token expired');

        await page.reload();
        await expectSignedOut(page);
        await expect.poll(() => status(page)).toMatch(/retry in \d+ s/);
      }));
  },
);
