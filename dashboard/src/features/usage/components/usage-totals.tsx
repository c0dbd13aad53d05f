import { formatCompact, formatCost, formatNumber, formatPercent, formatTokens } from '@/lib/format';
import { StatTile } from '@/components/ui/card';
import type { UsageTotals as Totals } from '../schema';

export function UsageTotals({ totals }: { totals: Totals }) {
  return (
    <div className="stats">
      <StatTile label="Requests" value={formatNumber(totals.requests)} />
      <StatTile
        label="Errors"
        value={formatNumber(totals.errors)}
        hint={totals.requests ? `${formatPercent(totals.errors, totals.requests)} of requests` : undefined}
      />
      <StatTile
        label="Total tokens"
        value={formatTokens(totals.total_tokens)}
        hint={`${formatCompact(totals.prompt_tokens)} prompt · ${formatCompact(totals.completion_tokens)} completion`}
      />
      <StatTile label="Cost" value={formatCost(totals.cost_usd)} />
      <StatTile
        label="Cache hit rate"
        value={formatPercent(totals.cache_hits, totals.requests)}
        hint={`${formatNumber(totals.cache_hits)} ${totals.cache_hits === 1 ? 'hit' : 'hits'} · ${formatCompact(totals.cache_hit_tokens)} tokens served from the cache`}
      />
      <StatTile label="Saved by the cache" value={formatCost(totals.cache_saved_usd)} hint="What the providers would have charged for the hits" />
    </div>
  );
}
