import { api, seg } from '@/lib/api';
import type { ApiKey, ApiKeyInput, CreatedApiKey, KeyLimitsReport, KeySettingsInput } from './schema';

const base = (workspaceId: string) => `/workspaces/${seg(workspaceId)}/api-keys`;

export function listApiKeys(workspaceId: string, signal?: AbortSignal) {
  return api.get<{ data: ApiKey[] }>(base(workspaceId), { signal }).then((r) => r.data);
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
