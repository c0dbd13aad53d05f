import { useState } from 'react';
import { formatDateTime, formatRelative } from '@/lib/format';
import { useResource } from '@/lib/use-resource';
import { Button } from '@/components/ui/button';
import { Card } from '@/components/ui/card';
import { SelectField } from '@/components/ui/field';
import { PageHeader } from '@/components/ui/page-header';
import { EmptyState, ErrorState, LoadingState } from '@/components/ui/states';
import { useWorkspaceId } from '@/features/auth/session-context';
import { listAudit } from '../api';
import { ACTION_FILTERS, changes, describeAction } from '../schema';

const LIMIT = 50;

export function AuditView() {
  const workspaceId = useWorkspaceId();
  const [page, setPage] = useState(1);
  const [action, setAction] = useState('');
  const audit = useResource(
    (signal) => listAudit(workspaceId, { page, limit: LIMIT, action: action || undefined }, signal),
    [workspaceId, page, action],
  );
  const entries = audit.data?.data ?? [];
  const total = audit.data?.total ?? 0;
  const pages = Math.max(1, Math.ceil(total / LIMIT));

  return (
    <>
      <PageHeader title="Audit log" description="Every change made to this workspace: who, when, from where, and what changed." />
      <Card
        actions={
          <SelectField
            label="Action"
            value={action}
            onChange={(e) => {
              setAction(e.target.value);
              setPage(1);
            }}
          >
            {ACTION_FILTERS.map((f) => (
              <option key={f.value} value={f.value}>
                {f.label}
              </option>
            ))}
          </SelectField>
        }
      >
        {audit.loading ? (
          <LoadingState label="Loading the audit log…" />
        ) : audit.error && !audit.data ? (
          <ErrorState error={audit.error} onRetry={audit.reload} title="Could not load the audit log" />
        ) : entries.length === 0 ? (
          <EmptyState title="Nothing recorded yet" />
        ) : (
          <>
            <div className="table-wrap">
              <table className="table">
                <caption className="sr-only">Audit log</caption>
                <thead>
                  <tr>
                    <th scope="col">When</th>
                    <th scope="col">Who</th>
                    <th scope="col">Action</th>
                    <th scope="col">Changes</th>
                    <th scope="col">IP</th>
                  </tr>
                </thead>
                <tbody>
                  {entries.map((e) => (
                    <tr key={e.id}>
                      <td title={formatDateTime(e.created_at)}>{formatRelative(e.created_at)}</td>
                      <td>{e.actor_email ?? <span className="muted">—</span>}</td>
                      <td>
                        <span className="cell-title">{describeAction(e.action)}</span>
                        <div className="muted cell-mono">{e.action}</div>
                      </td>
                      <td>
                        <ul className="plain-list">
                          {changes(e).map((line) => (
                            <li key={line}>{line}</li>
                          ))}
                        </ul>
                      </td>
                      <td className="cell-mono">{e.ip ?? ''}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </div>
            <div className="pager">
              <Button size="sm" disabled={page <= 1} onClick={() => setPage((p) => p - 1)}>
                Previous
              </Button>
              <span className="muted">
                Page {page} of {pages} · {total} entries
              </span>
              <Button size="sm" disabled={page >= pages} onClick={() => setPage((p) => p + 1)}>
                Next
              </Button>
            </div>
          </>
        )}
      </Card>
    </>
  );
}
