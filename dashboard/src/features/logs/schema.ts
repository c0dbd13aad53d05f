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
  /** What the response cache did; null when the cache was off for the request. */
  cache?: CacheResult | null;
  /** On a hit: what the provider would have charged. */
  cache_saved_usd?: number | null;
  /** The key of the entry's pool that served (null: none, or an entry without keys). */
  provider_key_id?: string | null;
  /** That key's label when the request was served. */
  provider_key_label?: string | null;
  /** What routing passed over on the way; null when nothing was. */
  skipped?: SkippedRoute[] | null;
  /** The request's W3C trace id, when it was traced or came with a traceparent. */
  trace_id?: string | null;
}

/** An entry, or one key of an entry, that routing passed over for a request. */
export interface SkippedRoute {
  entry: string;
  /** The key's label; null when the whole entry was skipped. */
  key: string | null;
  /** quota, breaker or weight (the gateway may add others). */
  reason: string;
}

const SKIP_REASON: Record<string, string> = {
  quota: 'out of its rate limit or quota',
  breaker: 'its breaker was open',
  weight: 'another entry of its priority served first',
};

/** Where a trace is shown: the template with the trace id in place of `{trace_id}`. */
export function traceUrl(template: string | null | undefined, traceId: string): string | null {
  if (!template || !/^[0-9a-f]{32}$/i.test(traceId)) return null;
  return template.split('{trace_id}').join(traceId);
}

/** "primary / key-2: its breaker was open". */
export function describeSkip(skip: SkippedRoute): string {
  const what = skip.key ? `${skip.entry} / ${skip.key}` : skip.entry;
  return `${what}: ${SKIP_REASON[skip.reason] ?? skip.reason}`;
}

export type CacheResult = 'hit' | 'miss' | 'bypass';

export const CACHE_RESULT_LABEL: Record<CacheResult, string> = {
  hit: 'Hit: answered from the cache, no provider called',
  miss: 'Miss: answered by a provider',
  bypass: 'Bypass: the cache was not used for this request',
};

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

/**
 * Up to this many keys, the key filter is a list to pick from; beyond, a field for the key's
 * id. One less than the API's largest page (500), so that asking for one more fits a page.
 */
export const KEY_PICKER_MAX = 499;

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
