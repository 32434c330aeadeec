import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // The account page's browser suite runs apart, with its build: npm run test:e2e.
    exclude: ['test/e2e/**', '**/node_modules/**'],
    globalSetup: ['test/support/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: 'forks',
    // Two files at a time on this 2-core machine (vitest's default is one fewer than the cores): the black-box suites
    // spend most of their time waiting on real servers, real SMTP and real TOTP steps, not on the CPU.
    maxWorkers: 2,
    // A worker runs file after file in one process instead of a fresh process per file: the files share no state
    // through modules (each builds its own app, database and servers), and the per-file start cost about 80 s of
    // the run.
    isolate: false,
    reporters: ['default'],
  },
});
