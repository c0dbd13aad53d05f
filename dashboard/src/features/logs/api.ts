import { api, seg } from '../../lib/api';
import { filtersToQuery, type LogFilters, type LogPage } from './schema';

export function listLogs(workspaceId: string, filters: LogFilters, page: number, limit?: number, signal?: AbortSignal) {
  return api.get<LogPage>(`/workspaces/${seg(workspaceId)}/logs`, { query: filtersToQuery(filters, page, limit), signal });
}
