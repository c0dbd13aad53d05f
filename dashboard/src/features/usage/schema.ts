import { localInputToRfc3339 } from '@/lib/format';

export type Granularity = 'hour' | 'day';

/** Requests, and the tokens and cost of what providers served. */
export interface UsageCounts {
  requests: number;
  errors: number;
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  cost_usd: number;
}

export interface UsageTotals extends UsageCounts {
  /** Requests the response cache answered (in `requests`; their tokens and cost are not above). */
  cache_hits: number;
  cache_hit_tokens: number;
  /** What the providers would have charged for the hits. */
  cache_saved_usd: number;
}

export interface UsagePoint extends UsageTotals {
  /** RFC 3339 start of the bucket */
  bucket: string;
}

export interface UsageResponse {
  from: string;
  to: string;
  granularity: Granularity;
  totals: UsageTotals;
  series: UsagePoint[];
}

export interface ProviderUsageRow extends UsageTotals {
  provider_id: string | null;
  provider_name: string | null;
  provider_kind: string | null;
  model: string;
}

export interface ProviderUsageResponse {
  from: string;
  to: string;
  data: ProviderUsageRow[];
}

export type Period = '24h' | '7d' | '30d' | 'custom';

export const PERIODS: { value: Period; label: string }[] = [
  { value: '24h', label: 'Last 24 hours' },
  { value: '7d', label: 'Last 7 days' },
  { value: '30d', label: 'Last 30 days' },
  { value: 'custom', label: 'Custom' },
];

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const SPAN: Record<Exclude<Period, 'custom'>, number> = { '24h': DAY, '7d': 7 * DAY, '30d': 30 * DAY };

export interface Range {
  from: string;
  to: string;
}

/** The time range of a period; `custom` uses datetime-local input values. */
export function periodRange(period: Period, now: number, custom?: { from: string; to: string }): Range | null {
  if (period === 'custom') {
    const from = custom ? localInputToRfc3339(custom.from) : undefined;
    const to = custom ? localInputToRfc3339(custom.to) : undefined;
    if (!from || !to || from >= to) return null;
    return { from, to };
  }
  return { from: new Date(now - SPAN[period]).toISOString(), to: new Date(now).toISOString() };
}

export function validateCustomRange(from: string, to: string): Partial<Record<'from' | 'to', string>> {
  const errors: Partial<Record<'from' | 'to', string>> = {};
  const start = localInputToRfc3339(from);
  const end = localInputToRfc3339(to);
  if (!start) errors.from = 'Choose a start.';
  if (!end) errors.to = 'Choose an end.';
  if (start && end && start >= end) errors.to = 'Must be after the start.';
  return errors;
}

export const EMPTY_TOTALS: UsageTotals = {
  requests: 0,
  errors: 0,
  prompt_tokens: 0,
  completion_tokens: 0,
  total_tokens: 0,
  cost_usd: 0,
  cache_hits: 0,
  cache_hit_tokens: 0,
  cache_saved_usd: 0,
};

