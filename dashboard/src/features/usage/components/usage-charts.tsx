import {
  Area,
  AreaChart,
  Bar,
  BarChart,
  CartesianGrid,
  Legend,
  ResponsiveContainer,
  Tooltip,
  XAxis,
  YAxis,
} from 'recharts';
import { formatCompact, formatCost, formatNumber } from '@/lib/format';
import { Card } from '@/components/ui/card';
import { bucketLabel, bucketTitle, type ChartRow } from '../chart-data';
import type { Granularity } from '../schema';

export const COLORS = {
  primary: '#4f46e5',
  secondary: '#0ea5e9',
  danger: '#e11d48',
  success: '#059669',
  amber: '#d97706',
  grid: '#e5e7eb',
  axis: '#6b7280',
};

const CHART_HEIGHT = 240;

interface ChartsProps {
  rows: ChartRow[];
  granularity: Granularity;
}

function axisProps(granularity: Granularity) {
  return {
    dataKey: 'time',
    type: 'number' as const,
    scale: 'time' as const,
    domain: ['dataMin', 'dataMax'] as [string, string],
    tickFormatter: (v: number) => bucketLabel(v, granularity),
    stroke: COLORS.axis,
    fontSize: 12,
    minTickGap: 24,
  };
}

/** Cost axis ticks: two significant digits are enough. */
function formatCostTick(value: number): string {
  return formatCost(value === 0 ? 0 : Number(value.toPrecision(2)));
}

const yAxis = { stroke: COLORS.axis, fontSize: 12, width: 56, allowDecimals: false };

/** A chart with a visible title and a text summary for assistive technology. */
function ChartCard({ title, summary, children }: { title: string; summary: string; children: React.ReactElement }) {
  return (
    <Card title={title} level={3} className="chart-card">
      <figure className="chart" aria-label={`${title}: ${summary}`}>
        <ResponsiveContainer width="100%" height={CHART_HEIGHT}>
          {children}
        </ResponsiveContainer>
        <figcaption className="sr-only">{summary}</figcaption>
      </figure>
    </Card>
  );
}

export function UsageCharts({ rows, granularity }: ChartsProps) {
  const title = (v: unknown) => bucketTitle(Number(v), granularity);
  const sum = (key: keyof ChartRow) => rows.reduce((s, r) => s + r[key], 0);
  return (
    <div className="chart-grid">
      <ChartCard title="Requests" summary={`${formatNumber(sum('requests'))} requests, ${formatNumber(sum('errors'))} errors`}>
        <AreaChart data={rows} margin={{ top: 8, right: 12, left: 0, bottom: 0 }}>
          <CartesianGrid stroke={COLORS.grid} vertical={false} />
          <XAxis {...axisProps(granularity)} />
          <YAxis {...yAxis} tickFormatter={formatCompact} />
          <Tooltip labelFormatter={title} formatter={(v) => formatNumber(Number(v))} />
          <Legend itemSorter={null} />
          <Area type="monotone" dataKey="requests" name="Requests" stroke={COLORS.primary} fill={COLORS.primary} fillOpacity={0.15} strokeWidth={2} isAnimationActive={false} />
          <Area type="monotone" dataKey="errors" name="Errors" stroke={COLORS.danger} fill={COLORS.danger} fillOpacity={0.1} strokeWidth={2} isAnimationActive={false} />
        </AreaChart>
      </ChartCard>
      <ChartCard title="Tokens" summary={`${formatNumber(sum('prompt_tokens'))} prompt and ${formatNumber(sum('completion_tokens'))} completion tokens`}>
        <BarChart data={rows} margin={{ top: 8, right: 12, left: 0, bottom: 0 }}>
          <CartesianGrid stroke={COLORS.grid} vertical={false} />
          <XAxis {...axisProps(granularity)} padding={{ left: 12, right: 12 }} />
          <YAxis {...yAxis} tickFormatter={formatCompact} />
          <Tooltip labelFormatter={title} formatter={(v) => formatNumber(Number(v))} />
          <Legend itemSorter={null} />
          <Bar dataKey="prompt_tokens" name="Prompt" stackId="tokens" fill={COLORS.primary} isAnimationActive={false} />
          <Bar dataKey="completion_tokens" name="Completion" stackId="tokens" fill={COLORS.secondary} isAnimationActive={false} />
        </BarChart>
      </ChartCard>
      <ChartCard title="Cost" summary={`${formatCost(sum('cost_usd'))} in total`}>
        <AreaChart data={rows} margin={{ top: 8, right: 12, left: 0, bottom: 0 }}>
          <CartesianGrid stroke={COLORS.grid} vertical={false} />
          <XAxis {...axisProps(granularity)} />
          <YAxis {...yAxis} allowDecimals tickFormatter={formatCostTick} width={84} />
          <Tooltip labelFormatter={title} formatter={(v) => formatCost(Number(v))} />
          <Area type="monotone" dataKey="cost_usd" name="Cost" stroke={COLORS.success} fill={COLORS.success} fillOpacity={0.15} strokeWidth={2} isAnimationActive={false} />
        </AreaChart>
      </ChartCard>
    </div>
  );
}
