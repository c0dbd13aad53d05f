import { api, seg } from '@/lib/api';
import type { Limits } from '@/features/api-keys/schema';
import type { Workspace } from './schema';

export function listWorkspaces(signal?: AbortSignal) {
  return api.get<{ data: Workspace[] }>('/workspaces', { signal });
}

export function createWorkspace(name: string) {
  return api.post<Workspace>('/workspaces', { name });
}

export type RoutingStrategy = 'weighted' | 'latency';

export type CacheMode = 'off' | 'on' | 'opt_in';

export interface CacheSettings {
  mode: CacheMode;
  ttl_seconds: number;
}

export interface WorkspaceSettings extends Workspace {
  limits?: Limits;
  routing?: { strategy: RoutingStrategy; sticky: boolean };
  cache?: CacheSettings;
  tracing?: TracingSettings;
}

export interface TracingSettings {
  /** Whether message content goes into the exported trace spans. */
  capture_content: boolean;
}

export function getWorkspace(id: string, signal?: AbortSignal) {
  return api.get<WorkspaceSettings>(`/workspaces/${seg(id)}`, { signal });
}

/** Changes only the routing settings (`PATCH` leaves the other fields as they are). */
export function setWorkspaceRouting(id: string, routing: { strategy: RoutingStrategy; sticky: boolean }) {
  return api.patch<WorkspaceSettings>(`/workspaces/${seg(id)}`, { routing });
}

/** Changes only the response-cache settings. */
export function setWorkspaceCache(id: string, cache: CacheSettings) {
  return api.patch<WorkspaceSettings>(`/workspaces/${seg(id)}`, { cache });
}

/** Changes only the tracing settings. */
export function setWorkspaceTracing(id: string, tracing: TracingSettings) {
  return api.patch<WorkspaceSettings>(`/workspaces/${seg(id)}`, { tracing });
}

/** Empties the workspace's response cache in every gateway. */
export function purgeWorkspaceCache(id: string) {
  return api.delete(`/workspaces/${seg(id)}/cache`);
}

export function renameWorkspace(id: string, name: string) {
  return api.put<Workspace>(`/workspaces/${seg(id)}`, { name });
}

export function setWorkspaceLimits(id: string, name: string, limits: Limits) {
  return api.put<WorkspaceSettings>(`/workspaces/${seg(id)}`, { name, limits });
}

export function deleteWorkspace(id: string) {
  return api.delete<{ id: string; revoked_api_keys: number; data_purged_after: string }>(`/workspaces/${seg(id)}`);
}
