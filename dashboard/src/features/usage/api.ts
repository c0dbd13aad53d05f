import { api, seg } from '@/lib/api';
import type { ProviderUsageResponse, Range, UsageResponse } from './schema';

export function getUsage(workspaceId: string, range: Range, signal?: AbortSignal) {
  return api.get<UsageResponse>(`/workspaces/${seg(workspaceId)}/usage`, { query: { ...range }, signal });
}

export function getUsageByProvider(workspaceId: string, range: Range, signal?: AbortSignal) {
  return api.get<ProviderUsageResponse>(`/workspaces/${seg(workspaceId)}/usage/by-provider`, { query: { ...range }, signal });
}
