/** Display formatting shared by every view. Missing values show as an em dash. */

export const DASH = '—';

const integer = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const dollars = new Intl.NumberFormat('en-US', {
  style: 'currency',
  currency: 'USD',
  minimumFractionDigits: 2,
  maximumFractionDigits: 2,
});

function isMissing(value: number | null | undefined): value is null | undefined {
  return value === null || value === undefined || Number.isNaN(value);
}

/**
 * US dollars. Amounts of a dollar or more get cents; smaller amounts keep three
 * significant digits so per-request costs stay readable ($0.000123).
 */
export function formatCost(value: number | null | undefined): string {
  if (isMissing(value)) return DASH;
  if (value === 0) return '$0.00';
  const sign = value < 0 ? '-' : '';
  const abs = Math.abs(value);
  if (abs >= 1) return sign + dollars.format(abs);
  if (abs < 0.000001) return `${sign}<$0.000001`;
  const decimals = Math.max(2, -Math.floor(Math.log10(abs)) + 2);
  let text = abs.toFixed(decimals);
  // Trim trailing zeros, keeping at least two decimals.
  const [whole, fraction] = text.split('.');
  let trimmed = fraction.replace(/0+$/, '');
  if (trimmed.length < 2) trimmed = trimmed.padEnd(2, '0');
  text = `${whole}.${trimmed}`;
  return `${sign}$${text}`;
}

/** Token counts with thousands separators. */
export function formatTokens(value: number | null | undefined): string {
  if (isMissing(value)) return DASH;
  return integer.format(value);
}

export const formatNumber = formatTokens;

/** Short form for chart axes and tiles: 950, 1.2K, 3.4M, 5.6B. */
export function formatCompact(value: number | null | undefined): string {
  if (isMissing(value)) return DASH;
  const abs = Math.abs(value);
  const units: [number, string][] = [
    [1e9, 'B'],
    [1e6, 'M'],
    [1e3, 'K'],
  ];
  for (const [size, unit] of units) {
    if (abs >= size) {
      const scaled = value / size;
      const text = Math.abs(scaled) >= 100 ? scaled.toFixed(0) : scaled.toFixed(1).replace(/\.0$/, '');
      return `${text}${unit}`;
    }
  }
  return integer.format(value);
}

/** Milliseconds as "850 ms", "1.25 s", "12.5 s" or "2m 05s". */
export function formatDuration(ms: number | null | undefined): string {
  if (isMissing(ms)) return DASH;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const seconds = ms / 1000;
  if (seconds < 10) return `${seconds.toFixed(2)} s`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const total = Math.round(seconds);
  const minutes = Math.floor(total / 60);
  const rest = total % 60;
  return `${minutes}m ${String(rest).padStart(2, '0')}s`;
}

export function formatPercent(part: number, whole: number): string {
  if (!whole) return DASH;
  const pct = (part / whole) * 100;
  return `${pct < 10 && pct > 0 ? pct.toFixed(1) : Math.round(pct)}%`;
}

const dateTime = new Intl.DateTimeFormat(undefined, {
  year: 'numeric',
  month: 'short',
  day: 'numeric',
  hour: '2-digit',
  minute: '2-digit',
  second: '2-digit',
});

const dateOnly = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'short', day: 'numeric' });

export function formatDateTime(iso: string | null | undefined): string {
  if (!iso) return DASH;
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? DASH : dateTime.format(date);
}

export function formatDate(iso: string | null | undefined): string {
  if (!iso) return DASH;
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? DASH : dateOnly.format(date);
}

/** "just now", "5 min ago", "3 h ago", "2 d ago", or "in 4 d" for future times. */
export function formatRelative(iso: string | null | undefined, now: number = Date.now()): string {
  if (!iso) return DASH;
  const time = new Date(iso).getTime();
  if (Number.isNaN(time)) return DASH;
  const diff = now - time;
  const future = diff < 0;
  const abs = Math.abs(diff);
  const minute = 60_000;
  const hour = 60 * minute;
  const day = 24 * hour;
  let text: string;
  if (abs < minute) return future ? 'in under a minute' : 'just now';
  if (abs < hour) text = `${Math.floor(abs / minute)} min`;
  else if (abs < day) text = `${Math.floor(abs / hour)} h`;
  else text = `${Math.floor(abs / day)} d`;
  return future ? `in ${text}` : `${text} ago`;
}

/** Value for an <input type="datetime-local"> in local time. */
export function toDateTimeLocal(date: Date): string {
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

/** An <input type="datetime-local"> value as RFC 3339 (UTC), or undefined when empty or invalid. */
export function localInputToRfc3339(value: string): string | undefined {
  if (!value) return undefined;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? undefined : date.toISOString();
}

export type Tone = 'success' | 'warning' | 'danger' | 'neutral';

export function statusTone(status: number | null | undefined): Tone {
  if (status === null || status === undefined) return 'neutral';
  if (status >= 200 && status < 300) return 'success';
  if (status >= 400 && status < 500) return 'warning';
  return 'danger';
}
