import { useEffect, useMemo, useState } from 'react';
import { useSearchParams } from 'react-router-dom';
import { formatCost, formatDateTime, formatDuration, formatRelative, formatTokens, statusTone } from '@/lib/format';
import { useResource } from '@/lib/use-resource';
import { Badge } from '@/components/ui/badge';
import { Button } from '@/components/ui/button';
import { Card } from '@/components/ui/card';
import { PageHeader } from '@/components/ui/page-header';
import { Spinner } from '@/components/ui/spinner';
import { EmptyState, ErrorState, LoadingState } from '@/components/ui/states';
import { useWorkspaceId } from '@/features/auth/session-context';
import { listProviders } from '@/features/providers/api';
import { listApiKeysPage } from '@/features/api-keys/api';
import { listLogs } from '../api';
import {
  cursorFromParams,
  describeSkip,
  filtersFromParams,
  filtersToParams,
  hasFilters,
  KEY_PICKER_MAX,
  PAGE_SIZE,
  type LogEntry,
} from '../schema';
import { LogDetail } from './log-detail';
import { getMeta } from '@/features/quickstart/api';
import { LogFilters } from './log-filters';

export const AUTO_REFRESH_MS = 5000;

export function LogsView() {
  const workspaceId = useWorkspaceId();
  const [params, setParams] = useSearchParams();
  const filters = useMemo(() => filtersFromParams(params), [params]);
  // The page shown: the newest without a cursor, else the one an earlier page's cursor names.
  const cursor = cursorFromParams(params);
  const [autoRefresh, setAutoRefresh] = useState(false);
  const [selected, setSelected] = useState<LogEntry | null>(null);

  const providers = useResource((signal) => listProviders(workspaceId, signal), [workspaceId]);
  const meta = useResource((signal) => getMeta(signal), []);
  // The newest keys, to show each request's key by its name, label and owner and to pick
  // one to filter by: one more than the picker holds says that it cannot hold them all.
  const keys = useResource((signal) => listApiKeysPage(workspaceId, KEY_PICKER_MAX + 1, undefined, signal), [workspaceId]);
  const keyList = keys.data?.data ?? [];
  const logs = useResource(
    // Each answer keeps the cursor it was asked with, so it is never read as another page's.
    async (signal) => ({ cursor, page: await listLogs(workspaceId, filters, cursor, PAGE_SIZE, signal) }),
    [workspaceId, filters, cursor],
  );

  const { reload } = logs;
  useEffect(() => {
    if (!autoRefresh) return;
    const timer = setInterval(reload, AUTO_REFRESH_MS);
    return () => clearInterval(timer);
  }, [autoRefresh, reload]);

  const page = logs.data?.page;
  const rows = page?.data ?? [];
  const older = page?.next_cursor ?? null;
  const newer = page?.prev_cursor ?? null;

  function goTo(nextCursor?: string) {
    setParams(filtersToParams(filters, nextCursor));
  }

  // Newer pages end at the newest rows: then show the newest page itself (a full one, kept
  // fresh by auto-refresh) rather than a page that only reaches up to them.
  const reachedNewest = cursor !== undefined && logs.data?.cursor === cursor && newer === null;
  useEffect(() => {
    if (reachedNewest) setParams(filtersToParams(filters), { replace: true });
  }, [reachedNewest, filters, setParams]);

  return (
    <>
      <PageHeader
        title="Logs"
        description="Every request through the gateway, newest first."
        actions={
          <>
            <label className="checkbox">
              <input type="checkbox" checked={autoRefresh} onChange={(e) => setAutoRefresh(e.target.checked)} />
              <span>Auto-refresh (5 s)</span>
            </label>
            <Button onClick={logs.reload} busy={logs.fetching && !logs.loading}>
              Refresh
            </Button>
          </>
        }
      />
      <Card>
        <LogFilters value={filters} providers={providers.data ?? []} apiKeys={keyList} onApply={(next) => setParams(filtersToParams(next))} />
      </Card>
      <Card>
        {logs.loading ? (
          <LoadingState label="Loading logs…" />
        ) : logs.error && !logs.data ? (
          <ErrorState error={logs.error} onRetry={logs.reload} title="Could not load logs" />
        ) : rows.length === 0 ? (
          <>
            <EmptyState title={hasFilters(filters) ? 'No requests match these filters' : 'No requests yet'}>
              {hasFilters(filters)
                ? 'Try a wider time range or clear the filters.'
                : 'Requests sent to the gateway with one of your API keys show up here within seconds.'}
            </EmptyState>
            {cursor && (
              <nav className="pagination" aria-label="Pagination">
                <span />
                <div className="pagination-buttons">
                  <Button size="sm" onClick={() => goTo()}>
                    Newest
                  </Button>
                </div>
              </nav>
            )}
          </>
        ) : (
          <>
            <div className="table-wrap">
              <table className="table table-hover">
                <caption className="sr-only">Requests, newest first. Select a row for details.</caption>
                <thead>
                  <tr>
                    <th scope="col">Time</th>
                    <th scope="col">Status</th>
                    <th scope="col">Provider</th>
                    <th scope="col">Model</th>
                    <th scope="col" className="num">
                      Tokens
                    </th>
                    <th scope="col" className="num">
                      Cost
                    </th>
                    <th scope="col" className="num">
                      Latency
                    </th>
                    <th scope="col" className="num">
                      Attempts
                    </th>
                  </tr>
                </thead>
                <tbody>
                  {rows.map((entry) => (
                    <LogRow key={entry.id} entry={entry} onOpen={() => setSelected(entry)} />
                  ))}
                </tbody>
              </table>
            </div>
            <nav className="pagination" aria-label="Pagination">
              <span className="muted" aria-live="polite">
                {`${cursor ? 'Earlier' : 'Newest'} ${rows.length} ${rows.length === 1 ? 'request' : 'requests'}`}
                {logs.fetching && <Spinner size={12} />}
              </span>
              <div className="pagination-buttons">
                <Button size="sm" disabled={newer === null} onClick={() => newer && goTo(newer)}>
                  Newer
                </Button>
                <Button size="sm" disabled={older === null} onClick={() => older && goTo(older)}>
                  Older
                </Button>
              </div>
            </nav>
          </>
        )}
      </Card>
      <LogDetail
        entry={selected}
        apiKey={keyList.find((k) => k.id === selected?.api_key_id) ?? null}
        traceUrlTemplate={meta.data?.trace_url_template ?? null}
        onClose={() => setSelected(null)}
      />
    </>
  );
}

function LogRow({ entry, onOpen }: { entry: LogEntry; onOpen: () => void }) {
  const served = entry.model_served && entry.model_served !== entry.model_requested ? entry.model_served : null;
  const fallbacks = entry.attempts.length > 1;
  return (
    <tr className="row-clickable" onClick={onOpen}>
      <td>
        <button
          type="button"
          className="link-button"
          title={formatDateTime(entry.created_at)}
          aria-label={`Details of request at ${formatDateTime(entry.created_at)}`}
          onClick={(e) => {
            e.stopPropagation();
            onOpen();
          }}
        >
          {formatRelative(entry.created_at)}
        </button>
      </td>
      <td>
        <Badge tone={statusTone(entry.status)} title={entry.error_kind ?? undefined}>
          {entry.status}
        </Badge>
        {entry.streamed && <span className="muted small"> stream</span>}
        {entry.cache === 'hit' && <span className="muted small"> cache hit</span>}
      </td>
      <td>
        {entry.provider_name ?? <span className="muted">—</span>}
        {entry.provider_key_label && <div className="muted small">key {entry.provider_key_label}</div>}
        {(entry.skipped?.length ?? 0) > 0 && (
          <div className="muted small" title={entry.skipped?.map(describeSkip).join('\n')}>
            {entry.skipped?.length} skipped
          </div>
        )}
      </td>
      <td>
        <span className="cell-mono">{entry.model_requested ?? '—'}</span>
        {served && <div className="muted small">→ {served}</div>}
      </td>
      <td className="num" title={`${formatTokens(entry.prompt_tokens)} prompt + ${formatTokens(entry.completion_tokens)} completion`}>
        {formatTokens(entry.total_tokens)}
      </td>
      <td className="num">{formatCost(entry.cost_usd)}</td>
      <td className="num">{formatDuration(entry.latency_ms)}</td>
      <td className="num">
        {entry.attempts.length}
        {fallbacks && <span className="muted small"> (fallback)</span>}
      </td>
    </tr>
  );
}
