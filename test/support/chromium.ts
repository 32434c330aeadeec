import { existsSync } from 'node:fs';

/** Debian's Chromium, which playwright-core drives: `apt-get install -y chromium` (.ci/run does it). */
export const CHROMIUM = '/usr/bin/chromium';

/** Headless in a container: no sandbox (root), no GPU, nothing fetched from Google behind the test's back. */
export const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * Whether browser suites must be skipped: only when Chromium is missing and CI is not set (with CI=true a missing
 * browser fails the suite instead). Warns once per suite that skips.
 */
export function skipWithoutChromium(what: string): boolean {
  const missing = !existsSync(CHROMIUM);
  if (missing && !process.env.CI) {
    console.warn(
      `\n*** ${CHROMIUM} is missing: ${what} is SKIPPED. Install it with \`apt-get install -y chromium\`.\n`,
    );
  }
  return missing && !process.env.CI;
}

/** Throws the CI failure for a missing browser. */
export function requireChromium(): void {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`CI=true needs Chromium at ${CHROMIUM}: apt-get install -y chromium`);
  }
}
