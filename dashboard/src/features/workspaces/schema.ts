export type { Workspace } from '@/features/auth/schema';

export const MAX_WORKSPACE_NAME = 100;

export function validateWorkspaceName(name: string): string | undefined {
  const trimmed = name.trim();
  if (!trimmed) return 'Enter a name.';
  if (trimmed.length > MAX_WORKSPACE_NAME) return `Use at most ${MAX_WORKSPACE_NAME} characters.`;
  return undefined;
}
