import { defineConfig } from 'vite';

// The account page: web/ built to dist/web, which src/http/account-page.ts serves at /. Nothing is inlined into the
// HTML (the page's policy allows no inline script or style), and no source maps ship.
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
  },
});
