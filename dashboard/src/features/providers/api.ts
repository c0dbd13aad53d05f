import { api, seg } from '@/lib/api';
import type { Provider, ProviderInput } from './schema';

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
