import { localInputToRfc3339 } from '@/lib/format';

export interface Attempt {
  provider_id: string;
  provider_name: string;
  status: number | null;
  latency_ms: number;
  error_kind: string | null;
}

export type UsageSource = 'provider' | 'estimated' | 'none';

export interface LogEntry {
  id: string;
  created_at: string;
  api_key_id: string | null;
  /** The front door: chat, embeddings, messages or responses. */
  route: string;
  provider_id: string | null;
  provider_name: string | null;
  provider_kind: string | null;
  model_requested: string | null;
  model_served: string | null;
  status: number;
  error_kind: string | null;
  streamed: boolean;
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  cost_usd: number | null;
  usage_source: UsageSource;
  latency_ms: number;
  ttfb_ms: number | null;
  attempts: Attempt[];
  /** What the gateway changed in the request, if anything. */
  note?: string | null;
}

/** One page of logs, newest first, and the cursors of the pages beside it. */
export interface LogPage {
  data: LogEntry[];
  limit: number;
  /** Pass as `cursor` for the older rows; null on the oldest page. */
  next_cursor: string | null;
  /** Pass as `cursor` for the newer rows; null on the newest page. */
  prev_cursor: string | null;
  /** Counted only when asked for (`count=true`). */
  total: number | null;
}

/** Filters as typed in the form (and kept in the URL). */
export interface LogFilters {
  /** An API key's id: its requests only. */
  api_key_id: string;
  provider: string;
  model: string;
  status: string;
  /** datetime-local values */
  from: string;
  to: string;
}

/** How a log row's front door reads in the UI. */
export function routeLabel(route: string): string {
  switch (route) {
    case 'chat':
      return 'Chat Completions';
    case 'embeddings':
      return 'Embeddings';
    case 'messages':
      return 'Anthropic Messages';
    case 'responses':
      return 'Responses';
    default:
      return route;
  }
}

export const EMPTY_FILTERS: LogFilters = { api_key_id: '', provider: '', model: '', status: '', from: '', to: '' };

/** Up to this many keys, the key filter is a list to pick from; beyond, a field for the key's id. */
export const KEY_PICKER_MAX = 500;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export const PAGE_SIZE = 25;

export function validateFilters(filters: LogFilters): Partial<Record<keyof LogFilters, string>> {
  const errors: Partial<Record<keyof LogFilters, string>> = {};
  const key = filters.api_key_id.trim();
  if (key && !UUID.test(key)) errors.api_key_id = 'Use an API key id, e.g. 0190f3a2-7c1e-7d44-9a0b-2f5e8c1d3b6a.';
  const status = filters.status.trim();
  if (status && (!/^\d{3}$/.test(status) || Number(status) < 100 || Number(status) > 599))
    errors.status = 'Use an HTTP status code, e.g. 200 or 429.';
  const from = localInputToRfc3339(filters.from);
  const to = localInputToRfc3339(filters.to);
  if (filters.from && !from) errors.from = 'Enter a valid date and time.';
  if (filters.to && !to) errors.to = 'Enter a valid date and time.';
  if (from && to && from >= to) errors.to = 'Must be after the start.';
  return errors;
}

/** The API query of a page: the filters, and the cursor of the page (none: the newest). */
export function filtersToQuery(filters: LogFilters, cursor?: string, limit: number = PAGE_SIZE) {
  return {
    cursor: cursor || undefined,
    limit,
    api_key_id: filters.api_key_id.trim() || undefined,
    provider: filters.provider || undefined,
    model: filters.model.trim() || undefined,
    status: filters.status.trim() || undefined,
    from: localInputToRfc3339(filters.from),
    to: localInputToRfc3339(filters.to),
  };
}

export function filtersFromParams(params: URLSearchParams): LogFilters {
  return {
    api_key_id: params.get('api_key_id') ?? '',
    provider: params.get('provider') ?? '',
    model: params.get('model') ?? '',
    status: params.get('status') ?? '',
    from: params.get('from') ?? '',
    to: params.get('to') ?? '',
  };
}

/** The view's URL parameters: the filters, and the cursor of the page shown (none: the newest). */
export function filtersToParams(filters: LogFilters, cursor?: string): Record<string, string> {
  const params: Record<string, string> = {};
  for (const [key, value] of Object.entries(filters)) if (value.trim()) params[key] = value.trim();
  if (cursor) params.cursor = cursor;
  return params;
}

export function cursorFromParams(params: URLSearchParams): string | undefined {
  return params.get('cursor') || undefined;
}

export function hasFilters(filters: LogFilters): boolean {
  return Object.values(filters).some((v) => v.trim() !== '');
}

export const USAGE_SOURCE_LABEL: Record<UsageSource, string> = {
  provider: 'Reported by the provider',
  estimated: 'Estimated by the gateway',
  none: 'Not available',
};
