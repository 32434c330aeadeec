import { defineConfig } from 'vitest/config';

// npm run test:e2e: the account page in Chromium against spawned servers, after a fresh build of the page, and the
// /docs browser test (which npm test also runs), so that this one command drives every page a browser sees.
export default defineConfig({
  test: {
    include: ['test/e2e/**/*.test.ts', 'test/browser/**/*.test.ts'],
    globalSetup: ['test/e2e/support/build-page.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Two files at a time (vitest's default is one fewer than the cores, one here): each waits mostly on its
    // browser and servers.
    maxWorkers: 2,
    // A page's answer to a click waits for a real server's hash and a real browser: in CI, beside the other file's
    // browser and the lint and typecheck, adding a passkey took more than vitest's default second to show.
    expect: { poll: { timeout: 10_000 } },
    reporters: ['default'],
  },
});
