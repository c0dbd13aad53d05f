import { useMemo, useState, type FormEvent } from 'react';
import { useResource } from '@/lib/use-resource';
import { Button } from '@/components/ui/button';
import { Card } from '@/components/ui/card';
import { TextField } from '@/components/ui/field';
import { PageHeader } from '@/components/ui/page-header';
import { ErrorState, LoadingState } from '@/components/ui/states';
import { toDateTimeLocal } from '@/lib/format';
import { useWorkspaceId } from '@/features/auth/session-context';
import { getUsage, getUsageByProvider } from '../api';
import { breakdownRows, toChartRows } from '../chart-data';
import { PERIODS, periodRange, validateCustomRange, type Period, type Range } from '../schema';
import { ProviderBreakdown } from './provider-breakdown';
import { UsageCharts } from './usage-charts';
import { UsageTotals } from './usage-totals';

export function UsageView() {
  const workspaceId = useWorkspaceId();
  const [period, setPeriod] = useState<Period>('24h');
  const [range, setRange] = useState<Range>(() => periodRange('24h', Date.now()) as Range);
  const [customFrom, setCustomFrom] = useState(() => toDateTimeLocal(new Date(Date.now() - 7 * 86_400_000)));
  const [customTo, setCustomTo] = useState(() => toDateTimeLocal(new Date()));
  const [customErrors, setCustomErrors] = useState<Partial<Record<'from' | 'to', string>>>({});

  const usage = useResource((signal) => getUsage(workspaceId, range, signal), [workspaceId, range]);
  const byProvider = useResource((signal) => getUsageByProvider(workspaceId, range, signal), [workspaceId, range]);

  const rows = useMemo(
    () => (usage.data ? toChartRows(usage.data.series, usage.data.from, usage.data.to, usage.data.granularity) : []),
    [usage.data],
  );
  const breakdown = useMemo(() => breakdownRows(byProvider.data?.data ?? []), [byProvider.data]);

  function choose(next: Period) {
    setPeriod(next);
    if (next !== 'custom') setRange(periodRange(next, Date.now()) as Range);
  }

  function applyCustom(event: FormEvent) {
    event.preventDefault();
    const errors = validateCustomRange(customFrom, customTo);
    setCustomErrors(errors);
    const next = periodRange('custom', Date.now(), { from: customFrom, to: customTo });
    if (Object.keys(errors).length === 0 && next) setRange(next);
  }

  function refresh() {
    if (period === 'custom') {
      usage.reload();
      byProvider.reload();
    } else {
      setRange(periodRange(period, Date.now()) as Range);
    }
  }

  return (
    <>
      <PageHeader
        title="Usage"
        description="Requests, tokens and cost across all providers of this workspace."
        actions={
          <Button onClick={refresh} busy={usage.fetching && !usage.loading}>
            Refresh
          </Button>
        }
      />
      <Card>
        <div className="toolbar">
          <div className="segmented" role="group" aria-label="Period">
            {PERIODS.map((p) => (
              <button key={p.value} type="button" className="segmented-item" aria-pressed={period === p.value} onClick={() => choose(p.value)}>
                {p.label}
              </button>
            ))}
          </div>
          {period === 'custom' && (
            <form className="form-inline" onSubmit={applyCustom} noValidate aria-label="Custom period">
              <TextField label="From" type="datetime-local" value={customFrom} onChange={(e) => setCustomFrom(e.target.value)} error={customErrors.from} />
              <TextField label="To" type="datetime-local" value={customTo} onChange={(e) => setCustomTo(e.target.value)} error={customErrors.to} />
              <Button type="submit" variant="primary">
                Apply
              </Button>
            </form>
          )}
        </div>
      </Card>

      {usage.loading ? (
        <Card>
          <LoadingState label="Loading usage…" />
        </Card>
      ) : usage.error && !usage.data ? (
        <Card>
          <ErrorState error={usage.error} onRetry={usage.reload} title="Could not load usage" />
        </Card>
      ) : usage.data ? (
        <>
          <section aria-label="Totals">
            <UsageTotals totals={usage.data.totals} />
          </section>
          {usage.data.totals.requests === 0 && (
            <div className="banner banner-info" role="status">
              No requests in this period yet. Charts fill in as traffic goes through the gateway.
            </div>
          )}
          <UsageCharts rows={rows} granularity={usage.data.granularity} />
        </>
      ) : null}

      {byProvider.loading ? (
        <Card title="By provider and model">
          <LoadingState />
        </Card>
      ) : byProvider.error && !byProvider.data ? (
        <Card title="By provider and model">
          <ErrorState error={byProvider.error} onRetry={byProvider.reload} />
        </Card>
      ) : (
        <ProviderBreakdown rows={breakdown} />
      )}
    </>
  );
}
