// Vite build of the dashboard page: dashboard/ → dist/dashboard/ (served by
// coordinator/service/dashboard.ts). Everything is bundled (no CDN, no web fonts) and paths are
// relative, so a fresh install serves the page with no network. The server's CSP is
// `default-src 'self'` (inline styles allowed), so the build must not emit inline scripts.
import { defineConfig } from 'vite';

const here = new URL('.', import.meta.url);

export default defineConfig({
  root: decodeURIComponent(here.pathname),
  base: './',
  publicDir: false,
  logLevel: 'warn',
  clearScreen: false,
  build: {
    outDir: decodeURIComponent(new URL('../dist/dashboard/', here).pathname),
    emptyOutDir: true,
    assetsDir: 'assets',
    target: 'es2022',
    sourcemap: false,
    // Never inline assets as data: URLs into scripts; keep every file a file the server serves.
    assetsInlineLimit: 0,
    // No modulepreload polyfill (it is an inline-free module anyway, but the page has one entry).
    modulePreload: { polyfill: false },
    reportCompressedSize: false,
  },
});
