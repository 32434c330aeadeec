import { defineConfig } from 'vitest/config';

// npm run test:e2e: the account page in Chromium against spawned servers, after a fresh build of the page.
export default defineConfig({
  test: {
    include: ['test/e2e/**/*.test.ts'],
    globalSetup: ['test/e2e/support/build-page.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    reporters: ['default'],
  },
});
