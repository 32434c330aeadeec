/**
 * Second factors and passkeys on the account page in Chromium, against a spawned server on SQLite and on PostgreSQL:
 * an authenticator app enrolled on the page (the code computed here from the key the page shows), signing in with
 * password and code, with a recovery code, and with a passkey of Chromium's virtual authenticator (CDP), without a
 * password and as the second factor; and the refusals a person must meet in the page: user verification off, a bogus
 * signature, a deleted passkey, a wrong code. The page is opened on http://localhost (an IP is no WebAuthn RP ID).
 */
import type { Browser, BrowserContext, CDPSession, Page } from 'playwright-core';
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
  listTexts,
  type PageRun,
  PHONE,
  signInWithForm,
} from './support/page.ts';
import { linkIn, type SmtpSink } from './support/smtp-sink.ts';
import { previousStepCode, totpCode } from './support/totp.ts';

const overflow = 'document.documentElement.scrollWidth - document.documentElement.clientWidth';

interface Authenticator {
  cdp: CDPSession;
  id: string;
}

/** A platform authenticator with resident keys and user verification, answering every prompt by itself. */
async function addAuthenticator(context: BrowserContext, page: Page): Promise<Authenticator> {
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable', { enableUI: false });
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      ctap2Version: 'ctap2_1',
      transport: 'internal',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });
  return { cdp, id: authenticatorId };
}

async function credentialsOf(authenticator: Authenticator) {
  const { credentials } = await authenticator.cdp.send('WebAuthn.getCredentials', {
    authenticatorId: authenticator.id,
  });
  return credentials;
}

describe.skipIf(skipWithoutChromium('the second factors suite')).each(DIALECTS)(
  'second factors and passkeys in Chromium (%s)',
  (dialect) => {
    let sink: SmtpSink;
    let server: RunningServer;
    let browser: Browser;
    let publicUrl = '';
    let stop = async () => {};
    const api = { url: (path: string) => server.url(path), track: (secret: string) => secret };

    beforeAll(async () => {
      ({ sink, server, browser, publicUrl, stop } = await startMailingServer(dialect, (url) => ({
        WEBAUTHN_RP_ID: 'localhost',
        WEBAUTHN_ORIGINS: url,
      })));
    });
    afterAll(() => stop());

    const run = (name: string, steps: (run: PageRun) => Promise<void>, viewport?: typeof PHONE) =>
      inPage(browser, publicUrl, `${dialect}-mfa-${name}`, steps, viewport);

    const accessTokenOf = async (user: RegisteredUser) => {
      const answer = await postForm(api.url('/token'), {
        grant_type: 'password',
        username: user.username,
        password: user.password,
      });
      expect(answer.status, answer.text).toBe(200);
      return answer.json.access_token as string;
    };

    /** Turns the authenticator app on through the API; the key, and the codes it showed once. */
    const enrolTotp = async (user: RegisteredUser) => {
      const token = await accessTokenOf(user);
      const bearer = { authorization: `Bearer ${token}` };
      const started = await postJson(api.url('/users/me/mfa/totp'), { password: user.password }, bearer);
      expect(started.status, started.text).toBe(200);
      const secret = started.json.secret as string;
      const confirmed = await postJson(
        api.url('/users/me/mfa/totp/confirm'),
        { code: await previousStepCode(secret) },
        bearer,
      );
      expect(confirmed.status, confirmed.text).toBe(200);
      return { secret, recoveryCodes: confirmed.json.recovery_codes as string[] };
    };

    /** The password step, then the second step on screen. */
    const passwordStep = async (page: Page, user: RegisteredUser) => {
      await signInWithForm(page, user.username, user.password);
      await page.locator('#mfa-form').waitFor({ state: 'visible' });
      expect(await page.locator('#signin-form').isHidden()).toBe(true);
    };

    const signOut = async (page: Page) => {
      await page.getByRole('button', { name: 'Sign out', exact: true }).click();
      await expectSignedOut(page);
    };

    /** A new account that signs in on the page, adds a passkey there and signs out: its user and authenticator. */
    const userWithPagePasskey = async (page: Page, context: BrowserContext) => {
      const authenticator = await addAuthenticator(context, page);
      const user = await registerUser(api);
      await page.goto('/');
      await signInWithForm(page, user.username, user.password);
      await expectSignedIn(page, user.username);
      await page.locator('#passkey-add-password').fill(user.password);
      await page.getByRole('button', { name: 'Add a passkey' }).click();
      await expect.poll(() => page.locator('#passkey-list > li').count()).toBe(1);
      await signOut(page);
      return { user, authenticator };
    };

    /**
     * Asks for a reset mail, opens its link and submits a new password alone, which an account with a second factor
     * is refused (400); returns that password. `hidden` is what the page must not show before it is asked for.
     */
    const resetWithLinkAlone = async (page: Page, user: RegisteredUser, hidden: string) => {
      const asked = await postJson(api.url('/password/forgot'), { email: user.email });
      expect(asked.status, asked.text).toBe(202);
      const mail = await sink.waitForMail(user.email, (m) =>
        m.text.includes('/account/reset-password#token='),
      );
      await page.goto(linkIn(mail, `${publicUrl}/account/reset-password#token=`));
      await page.locator('#reset-title').waitFor({ state: 'visible' });
      expect(await page.locator(hidden).isHidden()).toBe(true);
      const newPassword = strongPassword();
      await page.locator('#reset-new').fill(newPassword);
      await page.locator('#reset-confirm').fill(newPassword);
      const first = page.waitForResponse((response) => response.url().endsWith('/password/reset'));
      await page.getByRole('button', { name: 'Set the new password' }).click();
      expect((await first).status()).toBe(400);
      return newPassword;
    };

    it('enrols an authenticator app on the page, then signs in with password and code, and with a recovery code', () =>
      run('totp', async ({ page }) => {
        const user = await registerUser(api);
        await page.goto('/');
        await signInWithForm(page, user.username, user.password);
        await expectSignedIn(page, user.username);
        await expect.poll(() => page.locator('#mfa-state').textContent()).toContain('Off');

        // A wrong password first: refused beside the field, nothing started.
        await page.locator('#totp-start-password').fill('not my password');
        await page.getByRole('button', { name: 'Set up an authenticator app' }).click();
        await page.locator('#totp-start-form-error').waitFor({ state: 'visible' });
        expect(await focusedId(page)).toBe('totp-start-form-error');
        expect(await page.locator('#totp-setup').isHidden()).toBe(true);

        await page.locator('#totp-start-password').fill(user.password);
        await page.getByRole('button', { name: 'Set up an authenticator app' }).click();
        await page.locator('#totp-setup').waitFor({ state: 'visible' });
        expect(await focusedId(page)).toBe('totp-setup-title');
        const qr = page.locator('#totp-qr svg');
        expect(await qr.getAttribute('role')).toBe('img');
        expect(await qr.locator('path').getAttribute('d')).toMatch(/^M/);
        const secret = ((await page.locator('#totp-secret').textContent()) ?? '').replace(/\s/g, '');
        expect(secret).toMatch(/^[A-Z2-7]{16,}$/);
        expect(await page.locator('#totp-start-password').inputValue()).toBe('');

        const confirmCode = page.locator('#totp-confirm-code');
        expect(await confirmCode.getAttribute('autocomplete')).toBe('one-time-code');
        expect(await confirmCode.getAttribute('inputmode')).toBe('numeric');
        await confirmCode.fill(totpCode(secret, 5));
        await page.getByRole('button', { name: 'Turn on' }).click();
        await page.locator('#totp-confirm-form-error').waitFor({ state: 'visible' });
        expect(await confirmCode.getAttribute('aria-invalid')).toBe('true');

        await confirmCode.fill(await previousStepCode(secret));
        await page.getByRole('button', { name: 'Turn on' }).click();
        await page.locator('#recovery-codes').waitFor({ state: 'visible' });
        expect(await focusedId(page)).toBe('recovery-codes-title');
        const codes = await listTexts(page, '#recovery-code-list');
        expect(codes).toHaveLength(10);
        expect(new Set(codes).size).toBe(10);
        // The key is off the page once the app is on.
        expect(await page.locator('#totp-setup').isHidden()).toBe(true);
        expect(await page.locator('#totp-secret').textContent()).toBe('');
        await expect
          .poll(() => page.locator('#mfa-state').textContent())
          .toContain('Recovery codes left: 10');
        await page.getByRole('button', { name: 'I saved them' }).click();
        expect(await page.locator('#recovery-codes').isHidden()).toBe(true);
        expect(await listTexts(page, '#recovery-code-list')).toEqual([]);
        await expect
          .poll(() => listTexts(page, '#activity-list'))
          .toContainEqual(expect.stringContaining('Authenticator app turned on'));

        // The password alone no longer signs in, here or through the API.
        const apiAnswer = await postForm(api.url('/token'), {
          grant_type: 'password',
          username: user.username,
          password: user.password,
        });
        expect(apiAnswer.status).toBe(403);
        expect(apiAnswer.json).toMatchObject({
          error: 'mfa_required',
          mfa_methods: ['otp', 'recovery_code'],
        });

        await signOut(page);
        await passwordStep(page, user);
        expect(await focusedId(page)).toBe('mfa-otp');
        expect(await page.locator('#mfa-otp').getAttribute('autocomplete')).toBe('one-time-code');
        expect(await page.locator('#mfa-otp').getAttribute('inputmode')).toBe('numeric');
        expect(await page.locator('#mfa-passkey').isHidden()).toBe(true);
        // The MFA token stays in the script's memory: nothing stored, nothing in the address.
        const stored = (await page.evaluate(
          'JSON.stringify({ ...localStorage, ...sessionStorage })',
        )) as string;
        expect(stored).not.toContain('mfa');
        expect(page.url()).toBe(`${publicUrl}/`);

        await page.locator('#mfa-otp').fill(totpCode(secret, 0) === '000000' ? '111111' : '000000');
        await page.getByRole('button', { name: 'Verify' }).click();
        await page.locator('#mfa-form-error').waitFor({ state: 'visible' });
        expect(await focusedId(page)).toBe('mfa-form-error');
        expect(await page.locator('#mfa-otp').getAttribute('aria-invalid')).toBe('true');

        await page.locator('#mfa-otp').fill(totpCode(secret, 0));
        await page.getByRole('button', { name: 'Verify' }).click();
        await expectSignedIn(page, user.username);
        expect(await focusedId(page)).toBe('account-title');

        await signOut(page);
        expect(await page.locator('#mfa-form').isHidden()).toBe(true);
        await passwordStep(page, user);
        await page.getByRole('button', { name: 'Use a recovery code' }).click();
        expect(await focusedId(page)).toBe('mfa-recovery');
        expect(await page.locator('#mfa-otp-field').isHidden()).toBe(true);
        await page.locator('#mfa-recovery').fill(codes[0] ?? '');
        await page.getByRole('button', { name: 'Verify' }).click();
        await expectSignedIn(page, user.username);
        await expect.poll(() => page.locator('#mfa-state').textContent()).toContain('Recovery codes left: 9');

        // A recovery code works once.
        await signOut(page);
        await passwordStep(page, user);
        await page.getByRole('button', { name: 'Use a recovery code' }).click();
        await page.locator('#mfa-recovery').fill(codes[0] ?? '');
        await page.getByRole('button', { name: 'Verify' }).click();
        await page.locator('#mfa-form-error').waitFor({ state: 'visible' });
        expect(await page.locator('#mfa-recovery').getAttribute('aria-invalid')).toBe('true');
        await page.getByRole('button', { name: 'Start again' }).click();
        expect(await focusedId(page)).toBe('signin-username');
        expect(await page.locator('#signin-form').isVisible()).toBe(true);

        // Signed in again (with the next recovery code), new codes (password and code), then the app turned off.
        await passwordStep(page, user);
        await page.getByRole('button', { name: 'Use a recovery code' }).click();
        await page.locator('#mfa-recovery').fill(codes[1] ?? '');
        await page.getByRole('button', { name: 'Verify' }).click();
        await expectSignedIn(page, user.username);
        await page.locator('#recovery-password').fill(user.password);
        await page.locator('#recovery-otp').fill(totpCode(secret, 1));
        await page.getByRole('button', { name: 'Get new recovery codes' }).click();
        await page.locator('#recovery-codes').waitFor({ state: 'visible' });
        const fresh = await listTexts(page, '#recovery-code-list');
        expect(fresh).toHaveLength(10);
        expect(fresh).not.toContain(codes[2]);
        await page.getByRole('button', { name: 'I saved them' }).click();

        await page.locator('#totp-remove-password').fill(user.password);
        await page.locator('#totp-remove-code').fill(codes[2] ?? '');
        await page.getByRole('button', { name: 'Turn off the authenticator app' }).click();
        await page.locator('#totp-remove-form-error').waitFor({ state: 'visible' });
        await page.locator('#totp-remove-code').fill(fresh[0] ?? '');
        await page.getByRole('button', { name: 'Turn off the authenticator app' }).click();
        await expect.poll(() => page.locator('#mfa-state').textContent()).toContain('Off');
        expect(await page.locator('#totp-start-form').isVisible()).toBe(true);
        expect(await page.locator('#totp-manage').isHidden()).toBe(true);
        await accessTokenOf(user);
      }));

    it('takes the second step with the keyboard alone', () =>
      run('keyboard', async ({ page }) => {
        const user = await registerUser(api);
        const { secret } = await enrolTotp(user);
        await page.goto('/');
        await expectSignedOut(page);
        for (let presses = 0; (await focusedId(page)) !== 'signin-username'; presses += 1) {
          expect(presses, 'Tab never reached the username field').toBeLessThan(10);
          await page.keyboard.press('Tab');
        }
        await page.keyboard.type(user.username);
        await page.keyboard.press('Tab');
        await page.keyboard.type(user.password);
        await page.keyboard.press('Enter');
        await page.locator('#mfa-form').waitFor({ state: 'visible' });
        expect(await focusedId(page)).toBe('mfa-otp');
        await page.keyboard.type(totpCode(secret, 0));
        await page.keyboard.press('Enter');
        await expectSignedIn(page, user.username);
        expect(await focusedId(page)).toBe('account-title');
      }));

    it('registers a passkey on the page, signs in with it without a password and uses it as the second factor', () =>
      run('passkey', async ({ page, context }) => {
        const authenticator = await addAuthenticator(context, page);
        const user = await registerUser(api);
        await page.goto('/');
        await signInWithForm(page, user.username, user.password);
        await expectSignedIn(page, user.username);
        await expect.poll(() => page.locator('#passkeys-empty').isVisible()).toBe(true);

        await page.locator('#passkey-add-password').fill('not my password');
        await page.getByRole('button', { name: 'Add a passkey' }).click();
        await page.locator('#passkey-add-form-error').waitFor({ state: 'visible' });
        expect(await credentialsOf(authenticator)).toHaveLength(0);

        // A name the server will not store is refused before the device makes a credential, in words (found from
        // outside: the credential was left on the device, and the page quoted a regular expression).
        await page.locator('#passkey-add-password').fill(user.password);
        await page.locator('#passkey-add-name').fill('abc\u202edef');
        await page.getByRole('button', { name: 'Add a passkey' }).click();
        await page.locator('#passkey-add-form-error').waitFor({ state: 'visible' });
        expect(await page.locator('#passkey-add-form-error').textContent()).toMatch(/visible character/);
        expect(await credentialsOf(authenticator)).toHaveLength(0);

        await page.locator('#passkey-add-password').fill(user.password);
        await page.locator('#passkey-add-name').fill('Virtual key');
        await page.getByRole('button', { name: 'Add a passkey' }).click();
        await expect.poll(() => listTexts(page, '#passkey-list .passkey-name')).toEqual(['Virtual key']);
        await expect
          .poll(() => page.locator('#status').textContent())
          .toContain('Passkey Virtual key added.');
        const [credential] = await credentialsOf(authenticator);
        expect(credential?.isResidentCredential).toBe(true);
        // The user handle the authenticator keeps is random, never the username.
        expect(Buffer.from(credential?.userHandle ?? '', 'base64').toString('latin1')).not.toContain(
          user.username,
        );

        // Renamed in place.
        await page.getByRole('button', { name: 'Rename passkey Virtual key' }).click();
        expect(await focusedId(page)).toBe('passkey-0-rename-name');
        await page.locator('#passkey-0-rename-name').fill('Laptop');
        await page.getByRole('button', { name: 'Save name' }).click();
        await expect.poll(() => listTexts(page, '#passkey-list .passkey-name')).toEqual(['Laptop']);

        // Without a password: the passkey alone.
        await signOut(page);
        const grant = page.waitForRequest(
          (request) => request.url().endsWith('/token') && (request.postData() ?? '').includes('webauthn'),
        );
        await page.getByRole('button', { name: 'Sign in with a passkey' }).click();
        await expectSignedIn(page, user.username);
        // The same assertion again, from elsewhere: its challenge is spent.
        const replayed = await postJson(api.url('/token'), JSON.parse((await grant).postData() ?? '{}'));
        expect(replayed.status, replayed.text).toBe(400);
        expect(replayed.json.error).toBe('invalid_grant');
        await expect
          .poll(() => listTexts(page, '#passkey-list .meta'))
          .toEqual([expect.stringContaining('last used')]);

        // With a password: the passkey is now its second factor.
        await signOut(page);
        await passwordStep(page, user);
        expect(await page.locator('#mfa-otp-field').isHidden()).toBe(true);
        expect(await page.locator('#mfa-submit').isHidden()).toBe(true);
        expect(await focusedId(page)).toBe('mfa-passkey');
        await page.getByRole('button', { name: 'Use a passkey' }).click();
        await expectSignedIn(page, user.username);

        // Deleted on the page: the authenticator still holds it, the server no longer takes it.
        await page.getByRole('button', { name: 'Delete passkey Laptop' }).click();
        await page.locator('#passkey-0-delete-password').fill(user.password);
        await page.getByRole('button', { name: 'Delete passkey', exact: true }).click();
        await expect.poll(() => page.locator('#passkeys-empty').isVisible()).toBe(true);
        expect(await credentialsOf(authenticator)).toHaveLength(1);
        await signOut(page);
        await page.getByRole('button', { name: 'Sign in with a passkey' }).click();
        await page.locator('#signin-form-error').waitFor({ state: 'visible' });
        expect(await focusedId(page)).toBe('signin-form-error');
        expect(await page.locator('#signed-in').isHidden()).toBe(true);
        // And the password alone signs in again.
        await signInWithForm(page, user.username, user.password);
        await expectSignedIn(page, user.username);
      }));

    it('asks a password-only session for a code before a passkey is added or deleted, once an app is on', () =>
      run('factor-change', async ({ page, context }) => {
        const authenticator = await addAuthenticator(context, page);
        const user = await registerUser(api);
        await page.goto('/');
        await signInWithForm(page, user.username, user.password);
        await expectSignedIn(page, user.username);
        expect(await page.locator('#passkey-add-code-field').isHidden()).toBe(true);
        // The app is turned on from this page, whose session signed in with the password alone: it stays signed in
        // (password-only sessions elsewhere end), but is no proof of the new factor.
        await page.locator('#totp-start-password').fill(user.password);
        await page.getByRole('button', { name: 'Set up an authenticator app' }).click();
        await page.locator('#totp-setup').waitFor({ state: 'visible' });
        const secret = ((await page.locator('#totp-secret').textContent()) ?? '').replace(/\s/g, '');
        await page.locator('#totp-confirm-code').fill(await previousStepCode(secret));
        await page.getByRole('button', { name: 'Turn on' }).click();
        await page.locator('#recovery-codes').waitFor({ state: 'visible' });
        const recoveryCodes = await listTexts(page, '#recovery-code-list');
        await page.getByRole('button', { name: 'I saved them' }).click();

        // RFC 9470's 401 asks for more proof; it is no dead session: the page neither refreshes nor signs out.
        const tokenRequests: string[] = [];
        page.on('request', (request) => {
          if (new URL(request.url()).pathname === '/token') tokenRequests.push(request.method());
        });
        await page.locator('#passkey-add-password').fill(user.password);
        await page.getByRole('button', { name: 'Add a passkey' }).click();
        await page.locator('#passkey-add-form-error').waitFor({ state: 'visible' });
        expect(tokenRequests).toEqual([]);
        await expectSignedIn(page, user.username);
        expect(await page.locator('#passkey-add-code-field').isVisible()).toBe(true);
        expect(await page.locator('#passkey-add-code-error').textContent()).toContain('recovery code');
        expect(await credentialsOf(authenticator)).toHaveLength(0);

        await page.locator('#passkey-add-password').fill(user.password);
        await page.locator('#passkey-add-code').fill(recoveryCodes[0] ?? '');
        await page.locator('#passkey-add-name').fill('Guarded key');
        await page.getByRole('button', { name: 'Add a passkey' }).click();
        await expect.poll(() => listTexts(page, '#passkey-list .passkey-name')).toEqual(['Guarded key']);

        await page.getByRole('button', { name: 'Delete passkey Guarded key' }).click();
        expect(await page.locator('#passkey-0-delete-otp').isVisible()).toBe(true);
        await page.locator('#passkey-0-delete-password').fill(user.password);
        await page.locator('#passkey-0-delete-otp').fill(recoveryCodes[1] ?? '');
        await page.getByRole('button', { name: 'Delete passkey', exact: true }).click();
        await expect.poll(() => page.locator('#passkeys-empty').isVisible()).toBe(true);
      }));

    it('refuses a passkey sign-in in the page when user verification fails, when the flags lie and when the signature is bogus', () =>
      run('passkey-refused', async ({ page, context }) => {
        const { user, authenticator } = await userWithPagePasskey(page, context);

        const refused = async (what: string) => {
          await page.getByRole('button', { name: 'Sign in with a passkey' }).click();
          await page.locator('#signin-form-error').waitFor({ state: 'visible' });
          expect(await page.locator('#signed-in').isHidden(), what).toBe(true);
          expect(await page.locator('#signin-form-error').textContent(), what).not.toBe('');
        };
        const { cdp, id: authenticatorId } = authenticator;

        // The authenticator cannot verify the person: the browser or the server refuses, never a session.
        await cdp.send('WebAuthn.setUserVerified', { authenticatorId, isUserVerified: false });
        await refused('user verification off');
        await cdp.send('WebAuthn.setUserVerified', { authenticatorId, isUserVerified: true });

        // An assertion that says UV=0 reaches the server, which requires it.
        await cdp.send('WebAuthn.setResponseOverrideBits', { authenticatorId, isBadUV: true });
        const noUv = page.waitForResponse((response) => response.url().endsWith('/token'));
        await refused('the UV flag off');
        expect((await noUv).status()).toBe(400);

        await cdp.send('WebAuthn.setResponseOverrideBits', {
          authenticatorId,
          isBadUV: false,
          isBogusSignature: true,
        });
        const bogus = page.waitForResponse((response) => response.url().endsWith('/token'));
        await refused('a bogus signature');
        expect((await bogus).status()).toBe(400);

        // The same refusals as a second factor, after the password.
        await passwordStep(page, user);
        const secondBogus = page.waitForResponse((response) => response.url().endsWith('/token'));
        await page.getByRole('button', { name: 'Use a passkey' }).click();
        await page.locator('#mfa-form-error').waitFor({ state: 'visible' });
        expect((await secondBogus).status()).toBe(400);
        expect(await page.locator('#signed-in').isHidden()).toBe(true);

        // Everything honest again: the same passkey works.
        await cdp.send('WebAuthn.setResponseOverrideBits', { authenticatorId, isBogusSignature: false });
        await page.getByRole('button', { name: 'Use a passkey' }).click();
        await expectSignedIn(page, user.username);
        await expect
          .poll(() => listTexts(page, '#activity-list'))
          .toContainEqual(expect.stringContaining('Passkey refused'));
      }));

    it('refuses a cloned passkey whose counter went back, and shows it blocked', () =>
      run('passkey-clone', async ({ page, context }) => {
        const authenticator = await addAuthenticator(context, page);
        const { cdp, id: authenticatorId } = authenticator;
        // An authenticator app too, to sign in and look at the passkey once it is blocked.
        const user = await registerUser(api);
        const { secret } = await enrolTotp(user);
        await page.goto('/');
        await passwordStep(page, user);
        await page.locator('#mfa-otp').fill(totpCode(secret, 0));
        await page.getByRole('button', { name: 'Verify' }).click();
        await expectSignedIn(page, user.username);
        await page.locator('#passkey-add-password').fill(user.password);
        await page.getByRole('button', { name: 'Add a passkey' }).click();
        await expect.poll(() => page.locator('#passkey-list > li').count()).toBe(1);
        // The copy is taken now, before the counter moves on.
        const [copy] = await credentialsOf(authenticator);
        if (!copy) throw new Error('no credential in the virtual authenticator');
        for (let uses = 0; uses < 2; uses += 1) {
          await signOut(page);
          await page.getByRole('button', { name: 'Sign in with a passkey' }).click();
          await expectSignedIn(page, user.username);
        }
        const [used] = await credentialsOf(authenticator);
        expect(used?.signCount).toBeGreaterThan(copy.signCount + 1);

        // The clone: the same key with the old counter, in place of the original.
        await cdp.send('WebAuthn.removeCredential', { authenticatorId, credentialId: copy.credentialId });
        await cdp.send('WebAuthn.addCredential', { authenticatorId, credential: copy });
        await signOut(page);
        const refused = page.waitForResponse((response) => response.url().endsWith('/token'));
        await page.getByRole('button', { name: 'Sign in with a passkey' }).click();
        expect((await refused).status()).toBe(400);
        await page.locator('#signin-form-error').waitFor({ state: 'visible' });
        expect(await page.locator('#signed-in').isHidden()).toBe(true);

        // Marked suspect: the page shows it blocked.
        await passwordStep(page, user);
        await page.locator('#mfa-otp').fill(totpCode(secret, 1));
        await page.getByRole('button', { name: 'Verify' }).click();
        await expectSignedIn(page, user.username);
        await expect
          .poll(() => listTexts(page, '#passkey-list .passkey-name'))
          .toEqual([expect.stringContaining('Blocked')]);
      }));

    it('asks for the second factor on the reset page, keeps the link unspent until it is given', () =>
      run('reset', async ({ page }) => {
        const user = await registerUser(api);
        const { secret, recoveryCodes } = await enrolTotp(user);
        const newPassword = await resetWithLinkAlone(page, user, '#reset-factor-field');
        await page.locator('#reset-factor-field').waitFor({ state: 'visible' });
        expect(await focusedId(page)).toBe('reset-form-error');
        expect(await page.locator('#reset-factor').getAttribute('aria-invalid')).toBe('true');
        expect(await page.locator('#reset-form-error').textContent()).toContain('authenticator app');

        await page.locator('#reset-factor').fill(totpCode(secret, 4));
        await page.getByRole('button', { name: 'Set the new password' }).click();
        await expect.poll(() => page.locator('#reset-factor-error').textContent()).not.toBe('');
        expect(await page.locator('#reset').isVisible()).toBe(true);

        await page.locator('#reset-factor').fill(recoveryCodes[0] ?? '');
        const done = page.waitForResponse((response) => response.url().endsWith('/password/reset'));
        await page.getByRole('button', { name: 'Set the new password' }).click();
        expect((await done).status()).toBe(204);
        await page.locator('#reset-done-title').waitFor({ state: 'visible' });

        // The new password still needs the second factor.
        const next = await postForm(api.url('/token'), {
          grant_type: 'password',
          username: user.username,
          password: newPassword,
        });
        expect(next.status).toBe(403);
        expect(next.json.error).toBe('mfa_required');
      }));

    it('asks a passkey-only account for its passkey on the reset page, and resets with it', () =>
      run('reset-passkey', async ({ page, context }) => {
        const { user, authenticator } = await userWithPagePasskey(page, context);
        const [registered] = await credentialsOf(authenticator);

        const newPassword = await resetWithLinkAlone(page, user, '#reset-passkey');
        // The link alone was refused: only the passkey is offered, as the main button.
        await page.locator('#reset-passkey').waitFor({ state: 'visible' });
        expect(await page.locator('#reset-factor-field').isHidden()).toBe(true);
        expect(await page.locator('#reset-submit').isHidden()).toBe(true);
        expect(await page.locator('#reset-passkey').getAttribute('class')).not.toContain('secondary');
        expect(await focusedId(page)).toBe('reset-form-error');
        expect(await page.locator('#reset-form-error').textContent()).toContain('passkeys');

        const done = page.waitForResponse((response) => response.url().endsWith('/password/reset'));
        await page.getByRole('button', { name: 'Use a passkey' }).click();
        expect((await done).status()).toBe(204);
        await page.locator('#reset-done-title').waitFor({ state: 'visible' });
        const [used] = await credentialsOf(authenticator);
        expect(used?.signCount).toBeGreaterThan(registered?.signCount ?? 0);

        // The old password is gone; the new one still asks for the passkey.
        const old = await postForm(api.url('/token'), {
          grant_type: 'password',
          username: user.username,
          password: user.password,
        });
        expect(old.status).toBe(400);
        const next = await postForm(api.url('/token'), {
          grant_type: 'password',
          username: user.username,
          password: newPassword,
        });
        expect(next.status).toBe(403);
        expect(next.json.mfa_methods).toEqual(['webauthn']);
      }));

    it('fits a 375 px wide screen: the second step, the QR code and the passkey list', () =>
      run(
        'phone',
        async ({ page, context }) => {
          await addAuthenticator(context, page);
          const user = await registerUser(api);
          const { secret } = await enrolTotp(user);
          await page.goto('/');
          await passwordStep(page, user);
          await page.getByRole('button', { name: 'Verify' }).click();
          await page.locator('#mfa-form-error').waitFor({ state: 'visible' });
          expect(await page.evaluate(overflow), 'the second step with its error').toBe(0);
          const field = await page.locator('#mfa-otp').boundingBox();
          expect(field?.width).toBeGreaterThan(250);
          const toggle = await page.locator('#mfa-recovery-toggle').boundingBox();
          expect(toggle?.height).toBeGreaterThanOrEqual(44);
          await page.locator('#mfa-otp').fill(totpCode(secret, 0));
          await page.getByRole('button', { name: 'Verify' }).click();
          await expectSignedIn(page, user.username);

          await page.locator('#passkey-add-password').fill(user.password);
          await page.locator('#passkey-add-name').fill('A passkey with a rather long name for a phone');
          await page.getByRole('button', { name: 'Add a passkey' }).click();
          await expect.poll(() => page.locator('#passkey-list > li').count()).toBe(1);
          await page.getByRole('button', { name: /^Delete passkey A passkey/ }).click();
          expect(await page.evaluate(overflow), 'the passkey list with a form open').toBe(0);

          // The QR code of a second user, who starts the set-up on a phone.
          await signOut(page);
          const other = await registerUser(api);
          await signInWithForm(page, other.username, other.password);
          await expectSignedIn(page, other.username);
          await page.locator('#totp-start-password').fill(other.password);
          await page.getByRole('button', { name: 'Set up an authenticator app' }).click();
          await page.locator('#totp-setup').waitFor({ state: 'visible' });
          expect(await page.evaluate(overflow), 'the set-up with its QR code').toBe(0);
          const qr = await page.locator('#totp-qr svg').boundingBox();
          expect(qr?.width).toBeGreaterThan(150);
          expect((qr?.x ?? 0) + (qr?.width ?? 0)).toBeLessThanOrEqual(PHONE.width);
        },
        PHONE,
      ));

    it('signs in through the MFA grant with a form body, the key in no answer once the app is on', async () => {
      const user = await registerUser(api);
      const { secret } = await enrolTotp(user);
      const token = await postForm(api.url('/token'), {
        grant_type: 'password',
        username: user.username,
        password: user.password,
      });
      expect(token.status).toBe(403);
      expect(token.text).not.toContain(secret);
      const challenge = await postForm(api.url('/token'), {
        grant_type: 'urn:gatehouse:params:oauth:grant-type:mfa',
        mfa_token: token.json.mfa_token,
        otp: totpCode(secret, 0),
      });
      expect(challenge.status, challenge.text).toBe(200);
      const status = await getWithToken(api.url('/users/me/mfa'), challenge.json.access_token);
      expect(status.json.totp.status).toBe('active');
      expect(status.text).not.toContain(secret);
    });
  },
);
