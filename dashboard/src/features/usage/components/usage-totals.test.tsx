import { render, screen } from '@testing-library/react';
import { describe, expect, it } from 'vitest';
import { EMPTY_TOTALS } from '../schema';
import { UsageTotals } from './usage-totals';

describe('usage totals', () => {
  it('shows the cache hit rate and the money the cache saved', () => {
    render(
      <UsageTotals
        totals={{ ...EMPTY_TOTALS, requests: 8, total_tokens: 90, cost_usd: 0.5, cache_hits: 2, cache_hit_tokens: 30, cache_saved_usd: 1.25 }}
      />,
    );
    expect(screen.getByRole('group', { name: 'Cache hit rate' }).textContent).toContain('25%');
    expect(screen.getByRole('group', { name: 'Cache hit rate' }).textContent).toContain('2 hits');
    expect(screen.getByRole('group', { name: 'Saved by the cache' }).textContent).toContain('$1.25');
  });

  it('has no hit rate without requests', () => {
    render(<UsageTotals totals={EMPTY_TOTALS} />);
    expect(screen.getByRole('group', { name: 'Cache hit rate' }).textContent).toContain('0 hits');
    expect(screen.getByRole('group', { name: 'Saved by the cache' }).textContent).toContain('$0.00');
  });
});
