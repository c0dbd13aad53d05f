import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';
import react from '@vitejs/plugin-react';

// API paths served by the admin API; the dev server forwards them so the
// dashboard and the API share one origin, as they do in production.
const API_PATHS = ['/auth', '/workspaces', '/invitations', '/healthz', '/openapi.json', '/meta'];
const API_TARGET = process.env.PERPETUO_ADMIN_URL ?? 'http://127.0.0.1:3000';

export default defineConfig({
  plugins: [react()],
  base: './',
  // `@/` is `src/` (tsconfig.json's `paths` says the same to the type checker); one config
  // serves the build, the dev server and Vitest.
  resolve: {
    alias: { '@': fileURLToPath(new URL('./src', import.meta.url)) },
  },
  server: {
    proxy: Object.fromEntries(API_PATHS.map((p) => [p, { target: API_TARGET, changeOrigin: false }])),
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    chunkSizeWarningLimit: 1000,
  },
  test: {
    environment: 'jsdom',
    setupFiles: ['./src/test/setup.ts'],
    include: ['src/**/*.test.{ts,tsx}'],
    css: false,
    // Test files share one jsdom per worker instead of building one each (jsdom's set-up
    // was 20 of the run's 45 s); what a test leaves in the page, storage or the URL is
    // reset after every test in setup.ts, and the files pass in any order
    // (`--sequence.shuffle`).
    isolate: false,
    // A bound on a hung test (the waits inside it are bounded at 10 s in setup.ts).
    testTimeout: 30_000,
  },
});
