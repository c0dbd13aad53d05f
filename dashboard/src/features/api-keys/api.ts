import { api, seg } from '@/lib/api';
import type { ApiKey, ApiKeyInput, CreatedApiKey, KeyLimitsReport, KeySettingsInput } from './schema';

const base = (workspaceId: string) => `/workspaces/${seg(workspaceId)}/api-keys`;

export function listApiKeys(workspaceId: string, signal?: AbortSignal) {
  return api.get<{ data: ApiKey[] }>(base(workspaceId), { signal }).then((r) => r.data);
}

/** A page of keys, newest first: `next_cursor` names the page of older keys (null on the last). */
export function listApiKeysPage(workspaceId: string, limit: number, cursor?: string, signal?: AbortSignal) {
  return api.get<{ data: ApiKey[]; next_cursor: string | null }>(base(workspaceId), { query: { limit, cursor }, signal });
}

export function createApiKey(workspaceId: string, input: ApiKeyInput) {
  return api.post<CreatedApiKey>(base(workspaceId), input);
}

export function revokeApiKey(workspaceId: string, keyId: string) {
  return api.post<ApiKey>(`${base(workspaceId)}/${seg(keyId)}/revoke`);
}

export function deleteApiKey(workspaceId: string, keyId: string) {
  return api.delete(`${base(workspaceId)}/${seg(keyId)}`);
}

export function updateApiKey(workspaceId: string, keyId: string, input: KeySettingsInput) {
  return api.put<ApiKey>(`${base(workspaceId)}/${seg(keyId)}`, input);
}

export function getKeyLimits(workspaceId: string, keyId: string, signal?: AbortSignal) {
  return api.get<KeyLimitsReport>(`${base(workspaceId)}/${seg(keyId)}/limits`, { signal });
}
