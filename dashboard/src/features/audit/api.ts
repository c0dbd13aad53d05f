import { api, seg } from '@/lib/api';
import type { AuditPage } from './schema';

export interface AuditQuery {
  page: number;
  limit: number;
  action?: string;
  actor?: string;
}

export function listAudit(workspaceId: string, query: AuditQuery, signal?: AbortSignal) {
  return api.get<AuditPage>(`/workspaces/${seg(workspaceId)}/audit`, {
    signal,
    query: { page: query.page, limit: query.limit, action: query.action, actor: query.actor },
  });
}
