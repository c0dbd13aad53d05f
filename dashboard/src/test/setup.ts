import { cleanup, configure } from '@testing-library/react';
import { afterEach, vi } from 'vitest';

// `findBy…` waits for what a render shows: the default second is a bound on a hung test,
// not a measurement, and role queries over a whole page in jsdom take several hundred ms
// of CPU on a loaded two-core machine. Ten seconds still ends a hung test early.
configure({ asyncUtilTimeout: 10_000 });

// Test files share one page (`isolate: false` in vite.config.ts): nothing a test leaves
// there reaches the next.
afterEach(() => {
  cleanup();
  window.sessionStorage.clear();
  window.localStorage.clear();
  if (window.location.hash) window.location.hash = '';
  vi.restoreAllMocks();
  vi.unstubAllGlobals();
});
