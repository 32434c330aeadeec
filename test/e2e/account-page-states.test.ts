/**
 * The account page's states between accounts and answers, found from outside in Chromium (2026-12-07): a sign-up
 * under REQUIRE_VERIFIED_EMAIL, a refusal left in a form for the next account, the focus after an automatic sign-out
 * and after a submission, and an outage's Retry-After.
 */
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { login, postJson, registerUser, strongPassword, uniqueName } from '../blackbox/support/client.ts';
import { DIALECTS, type RunningServer, useServer } from '../blackbox/support/server.ts';
import { skipWithoutChromium } from '../support/chromium.ts';
import { startMailingServer } from './support/mailing-server.ts';
import {
  expectSignedIn,
  expectSignedOut,
  focusedId,
  inPage,
  openSignedIn,
  signInWithForm,
  useChromium,
} from './support/page.ts';
import type { SmtpSink } from './support/smtp-sink.ts';

async function signUpWithForm(
  page: Page,
  username: string,
  password: string,
  email = `${username}@example.com`,
) {
  await page.locator('#signup-username').fill(username);
  await page.locator('#signup-email').fill(email);
  await page.locator('#signup-password').fill(password);
  await page.locator('#signup-age').fill('31');
  await page.getByRole('button', { name: 'Create account' }).click();
}

describe.skipIf(skipWithoutChromium('the account page states suite')).each(DIALECTS)(
  'the account page between accounts and answers (%s)',
  (dialect) => {
    const ctx = useServer(dialect);
    const chromium = useChromium();
    const run = (name: string, steps: (run: { page: Page }) => Promise<void>) =>
      inPage(chromium.browser, ctx.url(''), `${dialect}-states-${name}`, steps);

    // Found from outside: the field's maxlength counted UTF-16 units, and 3,000 emoji pasted were cut to 2,000.
    it('posts a message of 3,000 emoji whole, and says a message over 4,000 characters is too long', () =>
      run('emoji-length', async ({ page }) => {
        const user = await registerUser(ctx);
        await openSignedIn(page, user);
        const emoji = '\u{1F642}'.repeat(3000);
        await page.locator('#message-text').fill(emoji);
        const posted = page.waitForResponse((response) => response.url().endsWith('/conversation/messages'));
        await page.getByRole('button', { name: 'Add message' }).click();
        expect((await posted).status()).toBe(201);
        expect(JSON.parse((await (await posted).request().postData()) ?? '{}').text).toBe(emoji);

        await page.locator('#message-text').fill('a'.repeat(4001));
        await page.getByRole('button', { name: 'Add message' }).click();
        await expect.poll(() => page.locator('#message-text').getAttribute('aria-invalid')).toBe('true');
        expect(await page.locator('#message-text-error').textContent()).toContain('at most 4000 characters');
      }));

    // Found from outside: on the last page the button hid under the focus, which fell to the page's body.
    it('moves the focus to the first older message loaded, from the keyboard', () =>
      run('older-focus', async ({ page }) => {
        const user = await registerUser(ctx);
        const token = await login(ctx, user.username, user.password);
        for (let index = 0; index < 24; index += 1) {
          const posted = await postJson(
            ctx.url('/conversation/messages'),
            { text: `message ${index}` },
            {
              authorization: `Bearer ${token}`,
            },
          );
          expect(posted.status).toBe(201);
        }
        await openSignedIn(page, user);
        await page.locator('#messages-more').waitFor({ state: 'visible' });
        await page.locator('#messages-more').focus();
        await page.keyboard.press('Enter');
        await page.locator('#messages-more').waitFor({ state: 'hidden' });
        await expect
          .poll(() => page.evaluate('document.activeElement?.closest("#message-list") !== null'))
          .toBe(true);
        expect(await page.evaluate('document.activeElement?.textContent ?? ""')).toContain('message 3');
        await expect.poll(() => page.locator('#status').textContent()).toContain('5 older messages shown.');
      }));

    it('starts the next account signed in with clean forms, and keeps the focus after a submission', () =>
      run('clean-forms', async ({ page }) => {
        await page.goto('/');
        await expectSignedOut(page);
        // A refusal in a signed-out form, left there by whoever used the page before.
        const taken = await registerUser(ctx);
        await signUpWithForm(page, taken.username, strongPassword());
        await expect.poll(() => page.locator('#signup-username').getAttribute('aria-invalid')).toBe('true');
        await signInWithForm(page, taken.username, taken.password);
        await expectSignedIn(page, taken.username);
        await page.getByRole('button', { name: 'Add message' }).click();
        await expect.poll(() => page.locator('#message-text').getAttribute('aria-invalid')).toBe('true');
        await page.getByRole('button', { name: 'Sign out', exact: true }).click();
        await expectSignedOut(page);

        expect(await page.locator('#signup-username').getAttribute('aria-invalid')).toBeNull();
        expect(await page.locator('#signup-form-error').isHidden()).toBe(true);
        const second = uniqueName('second');
        await signUpWithForm(page, second, strongPassword());
        await expectSignedIn(page, second);
        expect(await page.locator('#message-text').getAttribute('aria-invalid')).toBeNull();
        expect(await page.locator('#message-form-error').isHidden()).toBe(true);
        expect(await page.locator('#message-text-error').isHidden()).toBe(true);

        await page.locator('#message-text').fill('kept by the keyboard');
        const posted = page.waitForResponse((response) => response.url().endsWith('/conversation/messages'));
        await page.locator('#message-text').press('Tab');
        await page.keyboard.press('Enter');
        expect((await posted).status()).toBe(201);
        await expect.poll(() => page.locator('#status').textContent()).toContain('Message added.');
        expect(await page.evaluate('document.activeElement === document.body')).toBe(false);
      }));

    it('moves the focus to the sign-in form when the session ends elsewhere', () =>
      run('session-lost', async ({ page }) => {
        const user = await registerUser(ctx);
        await openSignedIn(page, user);
        // Signed out everywhere from another client: the page's next request meets the ended session.
        const other = await login(ctx, user.username, user.password);
        const ended = await fetch(ctx.url('/logout/all'), {
          method: 'POST',
          headers: { authorization: `Bearer ${other}` },
        });
        expect(ended.status).toBe(204);
        await page.locator('#message-text').fill('after the end');
        await page.getByRole('button', { name: 'Add message' }).click();
        await expectSignedOut(page);
        await expect.poll(() => focusedId(page)).toBe('signin-username');
        await expect.poll(() => page.locator('#status').textContent()).toContain('Your session has ended');
      }));

    it('says when to retry after a 503, as after a 429', () =>
      run('retry-after', async ({ page }) => {
        const user = await registerUser(ctx);
        await openSignedIn(page, user);
        await page.route('**/conversation/messages', (route) =>
          route.request().method() === 'POST'
            ? route.fulfill({
                status: 503,
                headers: { 'content-type': 'application/json', 'retry-after': '9' },
                body: JSON.stringify({ detail: 'The database is unavailable; try again shortly' }),
              })
            : route.continue(),
        );
        await page.locator('#message-text').fill('during an outage');
        await page.getByRole('button', { name: 'Add message' }).click();
        await expect
          .poll(() => page.locator('#message-form-error').textContent())
          .toBe('The database is unavailable; try again shortly (retry in 9 s)');
      }));
  },
);

describe.skipIf(skipWithoutChromium('the account page states suite')).each(DIALECTS)(
  'signing up on the account page with REQUIRE_VERIFIED_EMAIL=true (%s)',
  (dialect) => {
    let sink: SmtpSink;
    let server: RunningServer;
    let browser: Browser;
    let publicUrl = '';
    let stop = async () => {};
    beforeAll(async () => {
      ({ sink, server, browser, publicUrl, stop } = await startMailingServer(dialect, () => ({
        REQUIRE_VERIFIED_EMAIL: 'true',
      })));
    }, 60_000);
    afterAll(() => stop());

    // Found from outside: the sign-up's own sign-in was refused ("Email not verified") and shown as the sign-up's
    // failure, every field kept, and a second press answered 409; nothing on the page asked for the link.
    it('says the account was created and mails the link to confirm the address', () =>
      inPage(browser, publicUrl, `${dialect}-states-verify-first`, async ({ page }) => {
        await page.goto('/');
        await expectSignedOut(page);
        const username = uniqueName('verify');
        const email = `${username}@example.com`;
        const resent = page.waitForResponse((response) =>
          response.url().endsWith('/email/verification/resend'),
        );
        await signUpWithForm(page, username, strongPassword(), email);
        expect((await resent).status()).toBe(202);
        await expect
          .poll(() => page.locator('#status').textContent())
          .toContain(
            `Account created. Confirm your email address before you sign in: a link is on its way to ${email}.`,
          );
        expect(await page.locator('#signup-form-error').isHidden()).toBe(true);
        expect(await page.locator('#signup-username').inputValue()).toBe('');
        expect(await focusedId(page)).toBe('signin-username');
        const mail = await sink.waitForMail(email, (m) => m.text.includes('/account/verify-email#token='));
        expect(mail.text).toContain(`${publicUrl}/account/verify-email#token=`);
        // The address is unknown to nobody but its owner: a second sign-up of the name is still a 409, not an account.
        const again = await postJson(server.url('/register/'), {
          username,
          email: `other.${email}`,
          password: strongPassword(),
          age: 30,
          level: 'beginner',
        });
        expect(again.status).toBe(409);
      }));
  },
);
