import { formatCost, formatDateTime, formatDuration, formatTokens, statusTone } from '@/lib/format';
import { Badge } from '@/components/ui/badge';
import { Dialog } from '@/components/ui/dialog';
import { kindInfo } from '@/features/providers/schema';
import type { ApiKey } from '@/features/api-keys/schema';
import { CACHE_RESULT_LABEL, USAGE_SOURCE_LABEL, describeSkip, routeLabel, traceUrl, type LogEntry } from '../schema';

export function LogDetail({
  entry,
  apiKey,
  traceUrlTemplate,
  onClose,
}: {
  entry: LogEntry | null;
  /** The request's key, when it is still listed. */
  apiKey?: ApiKey | null;
  /** `GET /meta`'s trace link template, when one is configured. */
  traceUrlTemplate?: string | null;
  onClose: () => void;
}) {
  return (
    <Dialog open={entry !== null} onClose={onClose} title="Request details" variant="panel">
      {entry && <LogDetailBody entry={entry} apiKey={apiKey} traceUrlTemplate={traceUrlTemplate} />}
    </Dialog>
  );
}

function LogDetailBody({
  entry,
  apiKey,
  traceUrlTemplate,
}: {
  entry: LogEntry;
  apiKey?: ApiKey | null;
  traceUrlTemplate?: string | null;
}) {
  const traceLink = entry.trace_id ? traceUrl(traceUrlTemplate, entry.trace_id) : null;
  const served = entry.model_served && entry.model_served !== entry.model_requested ? entry.model_served : null;
  return (
    <div className="stack">
      <div className="detail-summary">
        <Badge tone={statusTone(entry.status)}>{entry.status}</Badge>
        {entry.error_kind && <Badge tone="danger">{entry.error_kind}</Badge>}
        {entry.streamed && <Badge tone="info">streamed</Badge>}
        {entry.cache === 'hit' && <Badge tone="success">cache hit</Badge>}
      </div>
      <section aria-labelledby="detail-request">
        <h3 id="detail-request" className="section-title">
          Request
        </h3>
        <dl className="details">
          <dt>Time</dt>
          <dd>{formatDateTime(entry.created_at)}</dd>
          <dt>Request ID</dt>
          <dd className="cell-mono">{entry.id}</dd>
          {entry.trace_id && (
            <>
              <dt>Trace ID</dt>
              <dd className="cell-mono">
                {traceLink ? (
                  <a href={traceLink} target="_blank" rel="noreferrer noopener">
                    {entry.trace_id}
                  </a>
                ) : (
                  entry.trace_id
                )}
              </dd>
            </>
          )}
          <dt>API</dt>
          <dd>{routeLabel(entry.route)}</dd>
          {entry.note && (
            <>
              <dt>Note</dt>
              <dd>{entry.note}</dd>
            </>
          )}
          <dt>Model requested</dt>
          <dd>{entry.model_requested ?? '—'}</dd>
          <dt>Model served</dt>
          <dd>{served ?? entry.model_served ?? '—'}</dd>
          <dt>Provider</dt>
          <dd>
            {entry.provider_name ?? '—'}
            {entry.provider_kind && <span className="muted"> · {kindInfo(entry.provider_kind).label}</span>}
          </dd>
          {entry.provider_key_label && (
            <>
              <dt>Provider key</dt>
              <dd>{entry.provider_key_label}</dd>
            </>
          )}
          {entry.skipped && entry.skipped.length > 0 && (
            <>
              <dt>Skipped</dt>
              <dd>
                <ul className="plain-list">
                  {entry.skipped.map((skip, index) => (
                    <li key={index}>{describeSkip(skip)}</li>
                  ))}
                </ul>
              </dd>
            </>
          )}
          <dt>API key</dt>
          <dd>
            {apiKey ? (
              <>
                {apiKey.label || apiKey.name}
                <span className="muted"> · {apiKey.prefix}…</span>
                {apiKey.owner_email && <span className="muted"> · {apiKey.owner_email}</span>}
              </>
            ) : (
              <span className="cell-mono">{entry.api_key_id ?? '—'}</span>
            )}
          </dd>
        </dl>
      </section>
      <section aria-labelledby="detail-timing">
        <h3 id="detail-timing" className="section-title">
          Timing
        </h3>
        <dl className="details">
          <dt>Latency</dt>
          <dd>{formatDuration(entry.latency_ms)}</dd>
          <dt>Time to first byte</dt>
          <dd>{formatDuration(entry.ttfb_ms)}</dd>
        </dl>
      </section>
      <section aria-labelledby="detail-usage">
        <h3 id="detail-usage" className="section-title">
          Usage
        </h3>
        <dl className="details">
          <dt>Prompt tokens</dt>
          <dd>{formatTokens(entry.prompt_tokens)}</dd>
          <dt>Completion tokens</dt>
          <dd>{formatTokens(entry.completion_tokens)}</dd>
          <dt>Total tokens</dt>
          <dd>{formatTokens(entry.total_tokens)}</dd>
          <dt>Usage source</dt>
          <dd>{USAGE_SOURCE_LABEL[entry.usage_source] ?? entry.usage_source}</dd>
          <dt>Cost</dt>
          <dd>{formatCost(entry.cost_usd)}</dd>
          {entry.cache && (
            <>
              <dt>Cache</dt>
              <dd>{CACHE_RESULT_LABEL[entry.cache] ?? entry.cache}</dd>
            </>
          )}
          {entry.cache === 'hit' && (
            <>
              <dt>Saved by the cache</dt>
              <dd>{formatCost(entry.cache_saved_usd)}</dd>
            </>
          )}
        </dl>
      </section>
      <section aria-labelledby="detail-attempts">
        <h3 id="detail-attempts" className="section-title">
          Attempts ({entry.attempts.length})
        </h3>
        {entry.attempts.length === 0 ? (
          <p className="muted">No provider was tried.</p>
        ) : (
          <table className="table table-compact">
            <thead>
              <tr>
                <th scope="col">#</th>
                <th scope="col">Provider</th>
                <th scope="col">Status</th>
                <th scope="col">Latency</th>
                <th scope="col">Error</th>
              </tr>
            </thead>
            <tbody>
              {entry.attempts.map((attempt, index) => (
                <tr key={index}>
                  <td>{index + 1}</td>
                  <td>{attempt.provider_name}</td>
                  <td>
                    {attempt.status === null ? (
                      <Badge tone="danger">no response</Badge>
                    ) : (
                      <Badge tone={statusTone(attempt.status)}>{attempt.status}</Badge>
                    )}
                  </td>
                  <td>{formatDuration(attempt.latency_ms)}</td>
                  <td>{attempt.error_kind ?? '—'}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
    </div>
  );
}
