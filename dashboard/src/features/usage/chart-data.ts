import { EMPTY_TOTALS, type Granularity, type ProviderUsageRow, type UsageCounts, type UsagePoint } from './schema';

const STEP: Record<Granularity, number> = { hour: 3_600_000, day: 86_400_000 };

/** Most buckets drawn for one chart; longer ranges are shown as returned. */
export const MAX_BUCKETS = 1000;

export interface ChartRow extends UsageCounts {
  /** Bucket start, epoch milliseconds (UTC) */
  time: number;
}

/** Start of the UTC hour or day containing `ms`. */
export function bucketStart(ms: number, granularity: Granularity): number {
  const step = STEP[granularity];
  return Math.floor(ms / step) * step;
}

/**
 * Series → one chart row per bucket from `from` to `to`, with buckets the
 * server left out (no traffic) filled with zeros, sorted by time.
 */
export function toChartRows(series: UsagePoint[], from: string, to: string, granularity: Granularity): ChartRow[] {
  const rows = new Map<number, ChartRow>();
  const start = Date.parse(from);
  const end = Date.parse(to);
  if (!Number.isNaN(start) && !Number.isNaN(end) && end >= start) {
    const step = STEP[granularity] ?? STEP.hour;
    const first = bucketStart(start, granularity);
    const count = Math.floor((end - first) / step);
    if (count < MAX_BUCKETS) {
      for (let t = first; t <= end; t += step) {
        // The bucket that starts exactly at `to` holds nothing of the range.
        if (t === end && t !== first) break;
        rows.set(t, { time: t, ...EMPTY_TOTALS });
      }
    }
  }
  for (const point of series) {
    const time = Date.parse(point.bucket);
    if (Number.isNaN(time)) continue;
    const existing = rows.get(time) ?? { time, ...EMPTY_TOTALS };
    rows.set(time, {
      time,
      requests: existing.requests + (point.requests ?? 0),
      errors: existing.errors + (point.errors ?? 0),
      prompt_tokens: existing.prompt_tokens + (point.prompt_tokens ?? 0),
      completion_tokens: existing.completion_tokens + (point.completion_tokens ?? 0),
      total_tokens: existing.total_tokens + (point.total_tokens ?? 0),
      cost_usd: existing.cost_usd + (point.cost_usd ?? 0),
    });
  }
  return [...rows.values()].sort((a, b) => a.time - b.time);
}

const pad = (n: number) => String(n).padStart(2, '0');
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** Axis label for a bucket in local time: "14:00" for hours, "Mar 5" for days. */
export function bucketLabel(ms: number, granularity: Granularity): string {
  const d = new Date(ms);
  if (granularity === 'day') return `${MONTHS[d.getMonth()]} ${d.getDate()}`;
  return `${pad(d.getHours())}:00`;
}

/** Tooltip label: "Mar 5, 14:00" for hours, "Mar 5, 2025" for days. */
export function bucketTitle(ms: number, granularity: Granularity): string {
  const d = new Date(ms);
  if (granularity === 'day') return `${MONTHS[d.getMonth()]} ${d.getDate()}, ${d.getFullYear()}`;
  return `${MONTHS[d.getMonth()]} ${d.getDate()}, ${pad(d.getHours())}:00`;
}

export interface BreakdownRow extends UsageCounts {
  key: string;
  provider: string;
  model: string;
  label: string;
}

export const NO_PROVIDER = 'No provider';

/** By-provider rows, labelled and sorted by requests (then cost), largest first. */
export function breakdownRows(data: ProviderUsageRow[]): BreakdownRow[] {
  return data
    .map((row) => {
      const provider = row.provider_name ?? NO_PROVIDER;
      const model = row.model || '(unknown model)';
      return {
        key: `${row.provider_id ?? 'none'}|${row.model}`,
        provider,
        model,
        label: `${provider} · ${model}`,
        requests: row.requests,
        errors: row.errors,
        prompt_tokens: row.prompt_tokens,
        completion_tokens: row.completion_tokens,
        total_tokens: row.total_tokens,
        cost_usd: row.cost_usd,
      };
    })
    .sort((a, b) => b.requests - a.requests || b.cost_usd - a.cost_usd || a.label.localeCompare(b.label));
}

/** The largest `limit` rows, with the rest summed into "Other". */
export function topRows(rows: BreakdownRow[], limit: number): BreakdownRow[] {
  if (rows.length <= limit) return rows;
  const head = rows.slice(0, limit - 1);
  const rest = rows.slice(limit - 1);
  const other = rest.reduce<BreakdownRow>(
    (sum, r) => ({
      ...sum,
      requests: sum.requests + r.requests,
      errors: sum.errors + r.errors,
      prompt_tokens: sum.prompt_tokens + r.prompt_tokens,
      completion_tokens: sum.completion_tokens + r.completion_tokens,
      total_tokens: sum.total_tokens + r.total_tokens,
      cost_usd: sum.cost_usd + r.cost_usd,
    }),
    { key: 'other', provider: 'Other', model: `${rest.length} more`, label: `Other (${rest.length})`, ...EMPTY_TOTALS },
  );
  return [...head, other];
}
