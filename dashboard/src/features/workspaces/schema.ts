export type { Workspace } from '@/features/auth/schema';

export const MAX_WORKSPACE_NAME = 100;

export function validateWorkspaceName(name: string): string | undefined {
  const trimmed = name.trim();
  if (!trimmed) return 'Enter a name.';
  if (trimmed.length > MAX_WORKSPACE_NAME) return `Use at most ${MAX_WORKSPACE_NAME} characters.`;
  return undefined;
}

/** The longest a cached answer may serve: 30 days, as the server allows. */
export const MAX_CACHE_TTL_SECONDS = 2_592_000;

/** The TTL field's problem, if any: a whole number of seconds from 1 to 30 days. */
export function validateCacheTtl(raw: string): string | undefined {
  const text = raw.trim();
  if (!/^\d+$/.test(text)) return 'Enter a whole number of seconds.';
  const n = Number(text);
  if (n < 1 || n > MAX_CACHE_TTL_SECONDS) return `Use 1 to ${MAX_CACHE_TTL_SECONDS.toLocaleString('en-US')} seconds (30 days).`;
  return undefined;
}
