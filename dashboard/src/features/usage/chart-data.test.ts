import { describe, expect, it } from 'vitest';
import { breakdownRows, bucketStart, toChartRows, topRows } from './chart-data';
import type { ProviderUsageRow, UsagePoint } from './schema';

function point(bucket: string, requests: number, extra: Partial<UsagePoint> = {}): UsagePoint {
  return {
    bucket,
    requests,
    errors: 0,
    prompt_tokens: requests * 10,
    completion_tokens: requests * 5,
    total_tokens: requests * 15,
    cost_usd: requests * 0.001,
    cache_hits: 0,
    cache_hit_tokens: 0,
    cache_saved_usd: 0,
    ...extra,
  };
}

describe('bucketStart', () => {
  it('floors to the UTC hour or day', () => {
    const t = Date.parse('2025-03-05T14:37:12Z');
    expect(new Date(bucketStart(t, 'hour')).toISOString()).toBe('2025-03-05T14:00:00.000Z');
    expect(new Date(bucketStart(t, 'day')).toISOString()).toBe('2025-03-05T00:00:00.000Z');
  });
});

describe('toChartRows', () => {
  it('fills missing hours with zeros, in order', () => {
    const rows = toChartRows(
      [point('2025-03-05T13:00:00Z', 4, { errors: 1 }), point('2025-03-05T10:00:00Z', 2)],
      '2025-03-05T09:30:00Z',
      '2025-03-05T14:10:00Z',
      'hour',
    );
    expect(rows.map((r) => new Date(r.time).toISOString().slice(11, 16))).toEqual([
      '09:00',
      '10:00',
      '11:00',
      '12:00',
      '13:00',
      '14:00',
    ]);
    expect(rows.map((r) => r.requests)).toEqual([0, 2, 0, 0, 4, 0]);
    expect(rows[4]).toMatchObject({ errors: 1, prompt_tokens: 40, completion_tokens: 20, total_tokens: 60 });
    expect(rows[4].cost_usd).toBeCloseTo(0.004);
    expect(rows[0]).toMatchObject({ requests: 0, errors: 0, total_tokens: 0, cost_usd: 0 });
  });

  it('fills days and leaves out a bucket that starts exactly at the end', () => {
    const rows = toChartRows([point('2025-03-02T00:00:00Z', 1)], '2025-03-01T00:00:00Z', '2025-03-04T00:00:00Z', 'day');
    expect(rows.map((r) => new Date(r.time).toISOString().slice(0, 10))).toEqual(['2025-03-01', '2025-03-02', '2025-03-03']);
    expect(rows.map((r) => r.requests)).toEqual([0, 1, 0]);
  });

  it('keeps points that fall outside the expected grid and merges duplicates', () => {
    const rows = toChartRows(
      [point('2025-03-05T10:30:00Z', 1), point('2025-03-05T10:00:00Z', 2), point('2025-03-05T10:00:00+00:00', 3)],
      '2025-03-05T10:00:00Z',
      '2025-03-05T11:00:00Z',
      'hour',
    );
    expect(rows.map((r) => r.requests)).toEqual([5, 1]);
  });

  it('copes with an empty series, a bad range and very long ranges', () => {
    expect(toChartRows([], '2025-03-05T10:00:00Z', '2025-03-05T12:00:00Z', 'hour')).toHaveLength(2);
    expect(toChartRows([point('2025-03-05T10:00:00Z', 1)], 'bad', 'range', 'hour')).toHaveLength(1);
    expect(toChartRows([], '2000-01-01T00:00:00Z', '2025-01-01T00:00:00Z', 'hour')).toHaveLength(0);
  });
});

describe('breakdownRows and topRows', () => {
  const row = (name: string | null, model: string, requests: number, cost = 0): ProviderUsageRow => ({
    provider_id: name ? `id-${name}` : null,
    provider_name: name,
    provider_kind: name ? 'openai' : null,
    model,
    requests,
    errors: 0,
    prompt_tokens: 0,
    completion_tokens: 0,
    total_tokens: requests * 3,
    cost_usd: cost,
    cache_hits: 0,
    cache_hit_tokens: 0,
    cache_saved_usd: 0,
  });

  it('labels and sorts by requests, largest first', () => {
    const rows = breakdownRows([row('a', 'm1', 1), row(null, '', 7), row('b', 'm2', 3)]);
    expect(rows.map((r) => r.label)).toEqual(['No provider · (unknown model)', 'b · m2', 'a · m1']);
    expect(new Set(rows.map((r) => r.key)).size).toBe(3);
  });

  it('sums the tail into "Other"', () => {
    const rows = breakdownRows([row('a', 'm', 5), row('b', 'm', 4), row('c', 'm', 3, 0.5), row('d', 'm', 2, 0.25)]);
    const top = topRows(rows, 3);
    expect(top).toHaveLength(3);
    expect(top[2]).toMatchObject({ label: 'Other (2)', requests: 5, total_tokens: 15, cost_usd: 0.75 });
    expect(topRows(rows, 10)).toBe(rows);
  });
});
