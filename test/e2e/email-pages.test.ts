/**
 * The pages that mails link to (/account/verify-email, /account/reset-password) and the email parts of / in Chromium,
 * against a spawned server that sends its mail to a real SMTP server in this process: forgot → mail → link → new
 * password → sign in; sign in → send verification → mail → link → click → verified; by keyboard alone and at 375 px,
 * with the token leaving the browser in one POST and nowhere else.
 */
import type { Browser, Page, Request } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  getWithToken,
  postForm,
  postJson,
  type RegisteredUser,
  registerUser,
  strongPassword,
} from '../blackbox/support/client.ts';
import { DIALECTS, type RunningServer } from '../blackbox/support/server.ts';
import { skipWithoutChromium } from '../support/chromium.ts';
import { startMailingServer } from './support/mailing-server.ts';
import {
  expectSignedIn,
  expectSignedOut,
  focusedId,
  inPage,
  type PageRun,
  PHONE,
  signInWithForm,
} from './support/page.ts';
import { linkIn, type SmtpSink } from './support/smtp-sink.ts';

interface SeenRequest {
  method: string;
  url: string;
  body: string;
  referer: string | undefined;
}

/** Every request the page makes from now on, with its body and Referer. */
function recordRequests(page: Page): SeenRequest[] {
  const seen: SeenRequest[] = [];
  page.on('request', (request: Request) => {
    seen.push({
      method: request.method(),
      url: request.url(),
      body: request.postData() ?? '',
      referer: request.headers().referer,
    });
  });
  return seen;
}

/** The token went out once per use, in the body of `method path`, and in no URL, Referer or other body. */
function expectTokenOnlyIn(seen: SeenRequest[], token: string, method: string, path: string): void {
  const carriers = seen.filter(
    (request) =>
      request.url.includes(token) || request.body.includes(token) || request.referer?.includes(token),
  );
  expect(carriers.length).toBeGreaterThan(0);
  for (const request of carriers) {
    expect(`${request.method} ${new URL(request.url).pathname}`).toBe(`${method} ${path}`);
    expect(request.url).not.toContain(token);
    expect(request.referer ?? '').not.toContain(token);
  }
}

const overflow = 'document.documentElement.scrollWidth - document.documentElement.clientWidth';

describe.skipIf(skipWithoutChromium('the email pages suite')).each(DIALECTS)(
  'the email pages in Chromium (%s)',
  (dialect) => {
    let sink: SmtpSink;
    let server: RunningServer;
    let browser: Browser;
    // What the mails' links point at: PUBLIC_URL, which the browser opens; the test's own requests go to 127.0.0.1.
    let publicUrl = '';
    let stop = async () => {};
    const api = { url: (path: string) => server.url(path), track: (secret: string) => secret };

    beforeAll(async () => {
      ({ sink, server, browser, publicUrl, stop } = await startMailingServer(dialect));
    });
    afterAll(() => stop());

    const run = (name: string, steps: (run: PageRun) => Promise<void>, viewport?: typeof PHONE) =>
      inPage(browser, publicUrl, `${dialect}-email-${name}`, steps, viewport);

    const accessTokenOf = async (user: RegisteredUser, password = user.password) => {
      const answer = await postForm(api.url('/token'), {
        grant_type: 'password',
        username: user.username,
        password,
      });
      expect(answer.status, answer.text).toBe(200);
      return answer.json.access_token as string;
    };

    const isVerified = async (user: RegisteredUser) => {
      const me = await getWithToken(api.url('/users/me'), await accessTokenOf(user));
      expect(me.status).toBe(200);
      return me.json.email_verified as boolean;
    };

    /** Asks for a reset mail through the API and returns the link in it. */
    const resetLinkFor = async (user: RegisteredUser) => {
      const asked = await postJson(api.url('/password/forgot'), { email: user.email });
      expect(asked.status, `POST /password/forgot: ${asked.text}`).toBe(202);
      const mail = await sink.waitForMail(user.email, (m) =>
        m.text.includes('/account/reset-password#token='),
      );
      return linkIn(mail, `${publicUrl}/account/reset-password#token=`);
    };

    it('resets a forgotten password from the mail’s link, ends every session, and signs in with the new one', () =>
      run('reset', async ({ page }) => {
        const user = await registerUser(api);
        const before = await accessTokenOf(user);
        const seen = recordRequests(page);
        await page.goto('/');
        await expectSignedOut(page);

        await page.getByRole('button', { name: 'Forgot your password?' }).click();
        expect(
          await page.getByRole('button', { name: 'Forgot your password?' }).getAttribute('aria-expanded'),
        ).toBe('true');
        expect(await focusedId(page)).toBe('forgot-email');
        await page.getByLabel('Email of your account').fill(user.email);
        const forgot = page.waitForResponse((response) => response.url().endsWith('/password/forgot'));
        await page.getByRole('button', { name: 'Send me a link' }).click();
        expect((await forgot).status(), 'POST /password/forgot').toBe(202);
        await expect
          .poll(() => page.locator('#forgot-sent').textContent())
          .toContain('If an account uses this address, a mail is on its way');

        const mail = await sink.waitForMail(user.email, (m) =>
          m.text.includes('/account/reset-password#token='),
        );
        const link = linkIn(mail, `${publicUrl}/account/reset-password#token=`);
        const token = new URLSearchParams(new URL(link).hash.slice(1)).get('token') ?? '';
        expect(token.length).toBeGreaterThanOrEqual(32);

        const opened = await page.goto(link);
        expect(opened?.status()).toBe(200);
        expect(opened?.headers()['referrer-policy']).toBe('no-referrer');
        await page.locator('#reset-title').waitFor({ state: 'visible' });
        // The token left the address bar as soon as the page read it.
        expect(page.url()).toBe(`${publicUrl}/account/reset-password`);

        // The page's own checks, then the API's policy for passwords, beside the field.
        const newPassword = strongPassword();
        await page.getByLabel('New password', { exact: true }).fill(newPassword);
        await page.getByLabel('New password again').fill(`${newPassword}x`);
        await page.getByRole('button', { name: 'Set the new password' }).click();
        await expect
          .poll(() => page.locator('#reset-confirm-error').textContent())
          .toBe('Type the same new password twice.');
        expect(await focusedId(page)).toBe('reset-form-error');
        await page.getByLabel('New password', { exact: true }).fill('abc');
        await page.getByLabel('New password again').fill('abc');
        const weak = page.waitForResponse((response) => response.url().endsWith('/password/reset'));
        await page.getByRole('button', { name: 'Set the new password' }).click();
        expect((await weak).status(), 'POST /password/reset with a weak password').toBe(422);
        await expect.poll(() => page.locator('#reset-new').getAttribute('aria-invalid')).toBe('true');
        expect(await page.locator('#reset-new-error').textContent()).not.toBe('');
        expect(await page.locator('#reset-new').getAttribute('aria-describedby')).toBe(
          'reset-new-error reset-new-hint',
        );

        await page.getByLabel('New password', { exact: true }).fill(newPassword);
        await page.getByLabel('New password again').fill(newPassword);
        const reset = page.waitForResponse((response) => response.url().endsWith('/password/reset'));
        await page.getByRole('button', { name: 'Set the new password' }).click();
        expect((await reset).status(), 'POST /password/reset').toBe(204);
        await page.locator('#reset-done-title').waitFor({ state: 'visible' });
        expect(await focusedId(page)).toBe('reset-done-title');
        expect(await page.locator('#reset-done').textContent()).toContain('every session');
        expectTokenOnlyIn(seen, token, 'POST', '/password/reset');

        // Every session ended, the old password with them.
        expect((await getWithToken(api.url('/users/me'), before)).status).toBe(401);
        const old = await postForm(api.url('/token'), {
          grant_type: 'password',
          username: user.username,
          password: user.password,
        });
        expect(old.status).toBe(400);

        await page.getByRole('link', { name: 'Sign in with the new password' }).click();
        await expectSignedOut(page);
        // Under no-referrer, no request of these pages (the link to / included) said where it came from.
        expect(seen.filter((request) => request.referer)).toEqual([]);
        await signInWithForm(page, user.username, newPassword);
        await expectSignedIn(page, user.username);

        // The link worked once.
        await page.goto(link);
        await page.getByLabel('New password', { exact: true }).fill(strongPassword());
        await page
          .getByLabel('New password again')
          .fill(await page.getByLabel('New password', { exact: true }).inputValue());
        await page.getByRole('button', { name: 'Set the new password' }).click();
        await page.locator('#reset-invalid-title').waitFor({ state: 'visible' });
        expect(await focusedId(page)).toBe('reset-invalid-title');
        expect(await page.locator('#forgot').isVisible()).toBe(true);
      }));

    it('verifies the address only when the button is pressed, never on opening the link', () =>
      run('verify', async ({ page }) => {
        const user = await registerUser(api);
        const seen = recordRequests(page);
        await page.goto('/');
        await signInWithForm(page, user.username, user.password);
        await expectSignedIn(page, user.username);
        expect(await isVerified(user), 'GET /users/me: email_verified').toBe(false);
        await expect.poll(() => page.locator('#email-state').textContent()).toBe('Not verified');
        expect(await page.locator('#email-pending').isHidden()).toBe(true);

        const sent = page.waitForResponse((response) =>
          response.url().endsWith('/users/me/email/verification'),
        );
        await page.getByRole('button', { name: 'Send verification mail' }).click();
        expect((await sent).status(), 'POST /users/me/email/verification').toBe(202);
        await expect
          .poll(() => page.locator('#status').textContent())
          .toContain('verification mail is on its way');

        const mail = await sink.waitForMail(user.email, (m) =>
          m.text.includes('/account/verify-email#token='),
        );
        const link = linkIn(mail, `${publicUrl}/account/verify-email#token=`);
        const token = new URLSearchParams(new URL(link).hash.slice(1)).get('token') ?? '';

        const opened = await page.goto(link);
        expect(opened?.headers()['referrer-policy']).toBe('no-referrer');
        await page.getByRole('button', { name: 'Verify my email address' }).waitFor({ state: 'visible' });
        expect(page.url()).toBe(`${publicUrl}/account/verify-email`);
        // What a mail scanner does (load the page, and the page's scripts) verified nothing.
        await page.waitForLoadState('networkidle');
        expect(seen.filter((request) => request.url.endsWith('/email/verify'))).toEqual([]);
        expect(await isVerified(user)).toBe(false);

        const verified = page.waitForResponse((response) => response.url().endsWith('/email/verify'));
        await page.getByRole('button', { name: 'Verify my email address' }).click();
        expect((await verified).status(), 'POST /email/verify').toBe(200);
        await page.locator('#verified-title').waitFor({ state: 'visible' });
        expect(await focusedId(page)).toBe('verified-title');
        expect(await page.locator('#verified-email').textContent()).toBe(user.email);
        expect(await isVerified(user)).toBe(true);
        expectTokenOnlyIn(seen, token, 'POST', '/email/verify');

        // The account page says so (after a sign-in, if verifying ended the sessions that came before it).
        await page.getByRole('link', { name: 'Go to your account' }).click();
        await page.locator('#signed-in, #signed-out').first().waitFor({ state: 'visible' });
        if (await page.locator('#signed-out').isVisible()) {
          await signInWithForm(page, user.username, user.password);
        }
        await expectSignedIn(page, user.username);
        await expect.poll(() => page.locator('#email-state').textContent()).toBe('Verified');
        expect(await page.locator('#email-unverified').isHidden()).toBe(true);

        // Used once, the link is spent.
        await page.goto(link);
        await page.getByRole('button', { name: 'Verify my email address' }).click();
        await page.locator('#invalid-title').waitFor({ state: 'visible' });
        expect(await focusedId(page)).toBe('invalid-title');
        expect(await page.getByRole('link', { name: 'Go to your account' }).getAttribute('href')).toBe(
          '/#email',
        );
      }));

    it('shows a change of address as pending until its link is used', () =>
      run('pending', async ({ page }) => {
        const user = await registerUser(api);
        await page.goto('/');
        await signInWithForm(page, user.username, user.password);
        await expectSignedIn(page, user.username);
        const moved = `moved-${user.email}`;
        await page.getByLabel('New email').fill(moved);
        await page.locator('#email-password').fill(user.password);
        const changed = page.waitForResponse((response) => response.url().endsWith('/users/me'));
        await page.getByRole('button', { name: 'Change email' }).click();
        const answer = await changed;
        expect(answer.status()).toBe(200);
        expect((await answer.json()).pending_email, 'PATCH /users/me: pending_email').toBe(moved);
        await expect.poll(() => page.locator('#pending-email').textContent()).toBe(moved);
        expect(await page.locator('#current-email').textContent()).toBe(user.email);
        await expect
          .poll(() => page.locator('#status').textContent())
          .toContain(`A link is on its way to ${moved}`);
        await sink.waitForMail(moved, (m) => m.text.includes('/account/verify-email#token='));
      }));

    it('says that a link without its token is incomplete, and offers a new one', () =>
      run('incomplete', async ({ page }) => {
        const seen = recordRequests(page);
        await page.goto('/account/verify-email');
        await page.locator('#incomplete-title').waitFor({ state: 'visible' });
        expect(await page.locator('#verify').isHidden()).toBe(true);
        for (const url of [
          '/account/reset-password',
          '/account/reset-password#',
          '/account/reset-password#token=',
        ]) {
          // From another page: a change of fragment alone would be a navigation within the page.
          await page.goto('/account/verify-email');
          await page.goto(url);
          await page.locator('#reset-incomplete-title').waitFor({ state: 'visible' });
          expect(await page.locator('#reset-form').isHidden(), url).toBe(true);
          expect(await page.locator('#forgot-form').isVisible(), url).toBe(true);
          expect(page.url(), url).toBe(`${publicUrl}/account/reset-password`);
        }
        expect(seen.filter((request) => request.method !== 'GET')).toEqual([]);

        // The whole link pasted into the same tab afterwards changes only the fragment: the page starts again with it.
        await page.goto('/account/reset-password#token=a-token-pasted-later');
        await page.locator('#reset-title').waitFor({ state: 'visible' });
        await expect.poll(() => page.url()).toBe(`${publicUrl}/account/reset-password`);
        expect(await page.locator('#forgot').isHidden()).toBe(true);
      }));

    it('says that an unknown token is invalid, and offers a new link', () =>
      run('invalid', async ({ page }) => {
        await page.goto('/account/verify-email#token=not-a-token-anyone-was-given');
        const refused = page.waitForResponse((response) => response.url().endsWith('/email/verify'));
        await page.getByRole('button', { name: 'Verify my email address' }).click();
        expect((await refused).status(), 'POST /email/verify with an unknown token').toBe(400);
        await page.locator('#invalid-title').waitFor({ state: 'visible' });

        await page.goto('/account/reset-password#token=not-a-token-anyone-was-given');
        const password = strongPassword();
        await page.getByLabel('New password', { exact: true }).fill(password);
        await page.getByLabel('New password again').fill(password);
        await page.getByRole('button', { name: 'Set the new password' }).click();
        await page.locator('#reset-invalid-title').waitFor({ state: 'visible' });
        await page.getByLabel('Email of your account').fill('nobody@example.com');
        const forgot = page.waitForResponse((response) => response.url().endsWith('/password/forgot'));
        await page.getByRole('button', { name: 'Send me a link' }).click();
        expect((await forgot).status()).toBe(202);
        await expect
          .poll(() => page.locator('#forgot-sent').textContent())
          .toContain('If an account uses this address, a mail is on its way');
      }));

    it('sets a new password from the link with the keyboard alone', () =>
      run('keyboard', async ({ page }) => {
        const user = await registerUser(api);
        const link = await resetLinkFor(user);
        await page.goto(link);
        await page.locator('#reset-title').waitFor({ state: 'visible' });
        for (let presses = 0; (await focusedId(page)) !== 'reset-new'; presses += 1) {
          expect(presses, 'Tab never reached the new password').toBeLessThan(10);
          await page.keyboard.press('Tab');
        }
        const newPassword = strongPassword();
        await page.keyboard.type(newPassword);
        await page.keyboard.press('Tab');
        expect(await focusedId(page)).toBe('reset-confirm');
        await page.keyboard.type(newPassword);
        await page.keyboard.press('Enter');
        await page.locator('#reset-done-title').waitFor({ state: 'visible' });
        expect(await focusedId(page)).toBe('reset-done-title');
        for (
          let presses = 0;
          (await page.evaluate('document.activeElement.textContent')) !== 'Sign in with the new password';
          presses += 1
        ) {
          expect(presses, 'Tab never reached the sign-in link').toBeLessThan(10);
          await page.keyboard.press('Tab');
        }
        await page.keyboard.press('Enter');
        await expectSignedOut(page);
        await signInWithForm(page, user.username, newPassword);
        await expectSignedIn(page, user.username);
      }));

    it('fits a 375 px wide screen: the forgot form, both pages and their refusals', () =>
      run(
        'phone',
        async ({ page }) => {
          const fits = async (what: string) => {
            expect(await page.evaluate(overflow), what).toBe(0);
          };
          await page.goto('/');
          await expectSignedOut(page);
          await page.getByRole('button', { name: 'Forgot your password?' }).click();
          await page.locator('#forgot-email').waitFor({ state: 'visible' });
          await fits('/ with the forgot form');
          const toggle = await page.locator('#forgot-toggle').boundingBox();
          expect(toggle?.height).toBeGreaterThanOrEqual(44);

          await page.goto('/account/verify-email#token=a-token-for-the-layout-only');
          const button = page.getByRole('button', { name: 'Verify my email address' });
          await button.waitFor({ state: 'visible' });
          await fits('the verify page');
          expect((await button.boundingBox())?.height).toBeGreaterThanOrEqual(44);

          await page.goto('/account/reset-password#token=a-token-for-the-layout-only');
          await page.locator('#reset-title').waitFor({ state: 'visible' });
          await page.getByRole('button', { name: 'Set the new password' }).click();
          await page.locator('#reset-form-error').waitFor({ state: 'visible' });
          await fits('the reset page with its errors');
          const field = await page.locator('#reset-new').boundingBox();
          expect(field?.width).toBeGreaterThan(250);
          expect((field?.x ?? 0) + (field?.width ?? 0)).toBeLessThanOrEqual(PHONE.width);

          await page.goto('/account/reset-password');
          await page.locator('#forgot-email').waitFor({ state: 'visible' });
          await fits('the reset page without a token');
        },
        PHONE,
      ));
  },
);
