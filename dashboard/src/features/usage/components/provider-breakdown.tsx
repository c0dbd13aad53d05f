import { Bar, BarChart, CartesianGrid, Legend, ResponsiveContainer, Tooltip, XAxis, YAxis } from 'recharts';
import { formatCompact, formatCost, formatNumber, formatPercent, formatTokens } from '@/lib/format';
import { Card } from '@/components/ui/card';
import { EmptyState } from '@/components/ui/states';
import { topRows, type BreakdownRow } from '../chart-data';
import { COLORS } from './usage-charts';

export function ProviderBreakdown({ rows }: { rows: BreakdownRow[] }) {
  const chartRows = topRows(rows, 8);
  return (
    <Card title="By provider and model" level={2}>
      {rows.length === 0 ? (
        <EmptyState title="No traffic in this period" />
      ) : (
        <div className="breakdown">
          <figure className="chart" aria-label={`Requests by provider and model: ${rows.length} combinations`}>
            <ResponsiveContainer width="100%" height={Math.max(160, chartRows.length * 44 + 60)}>
              <BarChart data={chartRows} layout="vertical" margin={{ top: 8, right: 16, left: 8, bottom: 0 }}>
                <CartesianGrid stroke={COLORS.grid} horizontal={false} />
                <XAxis type="number" stroke={COLORS.axis} fontSize={12} tickFormatter={formatCompact} allowDecimals={false} />
                <YAxis type="category" dataKey="label" stroke={COLORS.axis} fontSize={12} width={180} />
                <Tooltip formatter={(v) => formatNumber(Number(v))} />
                <Legend itemSorter={null} />
                <Bar dataKey="requests" name="Requests" fill={COLORS.primary} isAnimationActive={false} />
                <Bar dataKey="errors" name="Errors" fill={COLORS.danger} isAnimationActive={false} />
              </BarChart>
            </ResponsiveContainer>
          </figure>
          <div className="table-wrap">
            <table className="table">
              <caption className="sr-only">Usage by provider and model</caption>
              <thead>
                <tr>
                  <th scope="col">Provider</th>
                  <th scope="col">Model</th>
                  <th scope="col" className="num">Requests</th>
                  <th scope="col" className="num">Errors</th>
                  <th scope="col" className="num">Prompt</th>
                  <th scope="col" className="num">Completion</th>
                  <th scope="col" className="num">Total tokens</th>
                  <th scope="col" className="num">Cost</th>
                </tr>
              </thead>
              <tbody>
                {rows.map((row) => (
                  <tr key={row.key}>
                    <td>{row.provider}</td>
                    <td className="cell-mono">{row.model}</td>
                    <td className="num">{formatNumber(row.requests)}</td>
                    <td className="num">
                      {formatNumber(row.errors)}
                      {row.errors > 0 && <span className="muted small"> ({formatPercent(row.errors, row.requests)})</span>}
                    </td>
                    <td className="num">{formatTokens(row.prompt_tokens)}</td>
                    <td className="num">{formatTokens(row.completion_tokens)}</td>
                    <td className="num">{formatTokens(row.total_tokens)}</td>
                    <td className="num">{formatCost(row.cost_usd)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </div>
      )}
    </Card>
  );
}
