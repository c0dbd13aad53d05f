import { api, seg } from '@/lib/api';
import { filtersToQuery, type LogFilters, type LogPage } from './schema';

/** A page of logs: the newest when `cursor` is unset, else the page an earlier answer's cursor names. */
export function listLogs(workspaceId: string, filters: LogFilters, cursor?: string, limit?: number, signal?: AbortSignal) {
  return api.get<LogPage>(`/workspaces/${seg(workspaceId)}/logs`, { query: filtersToQuery(filters, cursor, limit), signal });
}
