import path from 'node:path';
import { defineConfig } from 'vite';

const page = (file: string) => path.resolve(import.meta.dirname, 'web', file);

// The account page: web/ built to dist/web, which src/http/account-page.ts serves at / (and the two pages that mail
// links open, at /account/verify-email and /account/reset-password). Nothing is inlined into the HTML (the pages'
// policy allows no inline script or style), and no source maps ship.
export default defineConfig({
  root: 'web',
  base: '/',
  publicDir: false,
  logLevel: 'warn',
  build: {
    outDir: '../dist/web',
    emptyOutDir: true,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    target: 'es2022',
    rolldownOptions: {
      input: {
        index: page('index.html'),
        'verify-email': page('account/verify-email.html'),
        'reset-password': page('account/reset-password.html'),
      },
    },
  },
});
