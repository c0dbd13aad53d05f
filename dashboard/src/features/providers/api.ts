import { api, seg } from '@/lib/api';
import type { Provider, ProviderInput, ProviderKey } from './schema';

const base = (workspaceId: string) => `/workspaces/${seg(workspaceId)}/providers`;

export function listProviders(workspaceId: string, signal?: AbortSignal) {
  return api.get<{ data: Provider[] }>(base(workspaceId), { signal }).then((r) => r.data);
}

export function createProvider(workspaceId: string, input: ProviderInput) {
  return api.post<Provider>(base(workspaceId), input);
}

export function updateProvider(workspaceId: string, providerId: string, input: ProviderInput) {
  return api.put<Provider>(`${base(workspaceId)}/${seg(providerId)}`, input);
}

export function deleteProvider(workspaceId: string, providerId: string) {
  return api.delete(`${base(workspaceId)}/${seg(providerId)}`);
}

export interface NewKeyInput {
  key: string;
  label: string;
  weight?: number;
  enabled?: boolean;
}

export interface KeyPatch {
  label?: string;
  weight?: number;
  enabled?: boolean;
}

const keysOf = (workspaceId: string, providerId: string) => `${base(workspaceId)}/${seg(providerId)}/keys`;

/** The entry's keys, each with what gateways and logs say of it. */
export function listKeys(workspaceId: string, providerId: string, signal?: AbortSignal) {
  return api.get<{ data: ProviderKey[] }>(keysOf(workspaceId, providerId), { signal }).then((r) => r.data);
}

export function addKey(workspaceId: string, providerId: string, input: NewKeyInput) {
  return api.post<ProviderKey>(keysOf(workspaceId, providerId), input);
}

export function updateKey(workspaceId: string, providerId: string, keyId: string, patch: KeyPatch) {
  return api.patch<ProviderKey>(`${keysOf(workspaceId, providerId)}/${seg(keyId)}`, patch);
}

export function deleteKey(workspaceId: string, providerId: string, keyId: string) {
  return api.delete(`${keysOf(workspaceId, providerId)}/${seg(keyId)}`);
}
