/**
 * Driving the account page in Chromium: one browser per suite, a fresh context (cookies, storage) per test, every
 * content security policy violation and page error collected, and a screenshot in test-results/ when a test fails.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import { afterAll, beforeAll, expect } from 'vitest';
import { ROOT } from '../../blackbox/support/server.ts';
import { CHROMIUM, CHROMIUM_FLAGS, requireChromium } from '../../support/chromium.ts';

export const SCREENSHOTS = path.join(ROOT, 'test-results');
export const DESKTOP = { width: 1280, height: 900 };
export const PHONE = { width: 375, height: 740 };

/** Launches Chromium; `extraArgs` such as a host-resolver rule that gives 127.0.0.1 another name. */
export function launchChromium(extraArgs: string[] = []): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [...CHROMIUM_FLAGS, ...extraArgs],
  });
}

/** Chromium for a suite: launched before its first test, closed after its last. */
export function useChromium(): { readonly browser: Browser } {
  let browser: Browser | undefined;
  beforeAll(async () => {
    requireChromium();
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
  });
  return {
    get browser() {
      if (!browser) throw new Error('Chromium not launched');
      return browser;
    },
  };
}

/** Opens the account page and signs in there with the form as `user`. */
export async function openSignedIn(page: Page, user: { username: string; password: string }): Promise<void> {
  await page.goto('/');
  await signInWithForm(page, user.username, user.password);
  await expectSignedIn(page, user.username);
}

// Playwright adds this before any script of the page runs (through the DevTools protocol, which no policy blocks).
const WATCH_VIOLATIONS = `
  window.cspViolations = [];
  document.addEventListener('securitypolicyviolation', (event) =>
    window.cspViolations.push(event.violatedDirective + ' ' + event.blockedURI));
`;

export interface PageRun {
  page: Page;
  context: BrowserContext;
}

/**
 * Runs `steps` in a fresh browser context at `baseUrl`, then checks that the page met no policy violation and threw
 * nothing. A failure leaves a full-page screenshot and the console in the error.
 */
export async function inPage(
  browser: Browser,
  baseUrl: string,
  name: string,
  steps: (run: PageRun) => Promise<void>,
  viewport = DESKTOP,
): Promise<void> {
  const context = await browser.newContext({ baseURL: baseUrl, viewport });
  const page = await context.newPage();
  const consoleLines: string[] = [];
  page.on('console', (message) => consoleLines.push(`${message.type()}: ${message.text()}`));
  page.on('pageerror', (error) => consoleLines.push(`pageerror: ${error.message}`));
  await page.addInitScript(WATCH_VIOLATIONS);
  try {
    await steps({ page, context });
    // Pages opened elsewhere (another origin) are their own business; the account page's are checked.
    if (new URL(page.url()).origin === new URL(baseUrl).origin) {
      expect(await page.evaluate('window.cspViolations')).toEqual([]);
    }
    expect(consoleLines.filter((line) => /content security policy|trusted type/i.test(line))).toEqual([]);
    expect(consoleLines.filter((line) => line.startsWith('pageerror:'))).toEqual([]);
  } catch (error) {
    mkdirSync(SCREENSHOTS, { recursive: true });
    const file = path.join(SCREENSHOTS, `${name.replace(/[^a-z0-9]+/gi, '-')}-${Date.now()}.png`);
    await page.screenshot({ path: file, fullPage: true }).catch(() => {});
    throw new Error(
      `${(error as Error).message}\nscreenshot: ${file}\nconsole:\n${consoleLines.join('\n')}`,
      {
        cause: error,
      },
    );
  } finally {
    await context.close();
  }
}

/** Waits until the page shows the signed-in view for this user. */
export async function expectSignedIn(page: Page, username: string): Promise<void> {
  await page.locator('#signed-in').waitFor({ state: 'visible' });
  expect(await page.locator('#who-name').textContent()).toBe(username);
}

export async function expectSignedOut(page: Page): Promise<void> {
  await page.locator('#signed-out').waitFor({ state: 'visible' });
  expect(await page.locator('#signed-in').isHidden()).toBe(true);
}

export async function signInWithForm(page: Page, username: string, password: string): Promise<void> {
  await page.getByLabel('Username').first().fill(username);
  await page.locator('#signin-password').fill(password);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
}

/** The id of the focused element, '' for none. */
export function focusedId(page: Page): Promise<string> {
  return page.evaluate('document.activeElement ? document.activeElement.id : ""') as Promise<string>;
}

/** The texts of a list's items (`#list`) or of the elements a selector names inside them, in order. */
export async function listTexts(page: Page, selector: string): Promise<string[]> {
  const target = selector.includes(' ') ? selector : `${selector} > li`;
  return (await page.locator(target).allTextContents()).map((text) => text.trim());
}
