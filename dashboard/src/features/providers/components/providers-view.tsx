import { useState } from 'react';
import { Link } from 'react-router-dom';
import { toast } from '@/lib/toast-store';
import { useResource } from '@/lib/use-resource';
import { Badge } from '@/components/ui/badge';
import { Button } from '@/components/ui/button';
import { Card } from '@/components/ui/card';
import { ConfirmDialog } from '@/components/ui/confirm-dialog';
import { PageHeader } from '@/components/ui/page-header';
import { EmptyState, ErrorState, LoadingState } from '@/components/ui/states';
import { useSession, useWorkspaceId } from '@/features/auth/session-context';
import { can } from '@/features/members/schema';
import { deleteProvider, listProviders, updateProvider } from '../api';
import { kindInfo, planMove, sortByPriority, type Provider } from '../schema';

export function ProvidersView() {
  const workspaceId = useWorkspaceId();
  const manage = can(useSession().workspace?.role, 'manageProviders');
  const providers = useResource((signal) => listProviders(workspaceId, signal), [workspaceId]);
  const [pending, setPending] = useState<string | null>(null);
  const [toDelete, setToDelete] = useState<Provider | null>(null);
  const list = sortByPriority(providers.data ?? []);

  async function move(index: number, direction: 'up' | 'down') {
    const changes = planMove(list, index, direction);
    if (changes.length === 0) return;
    setPending(list[index].id);
    try {
      for (const change of changes) {
        await updateProvider(workspaceId, change.id, { priority: change.priority });
      }
      // Show the new order at once, then confirm it with the server.
      providers.setData((current) =>
        (current ?? []).map((p) => {
          const change = changes.find((c) => c.id === p.id);
          return change ? { ...p, priority: change.priority } : p;
        }),
      );
    } catch {
      // Reported by the API client.
    } finally {
      setPending(null);
      providers.reload();
    }
  }

  async function toggle(provider: Provider) {
    setPending(provider.id);
    try {
      const updated = await updateProvider(workspaceId, provider.id, { enabled: !provider.enabled });
      providers.setData((current) => (current ?? []).map((p) => (p.id === updated.id ? updated : p)));
      toast.success(`${updated.name} ${updated.enabled ? 'enabled' : 'disabled'}.`);
    } catch {
      // Reported by the API client.
    } finally {
      setPending(null);
    }
  }

  async function remove(provider: Provider) {
    await deleteProvider(workspaceId, provider.id);
    providers.setData((current) => (current ?? []).filter((p) => p.id !== provider.id));
    toast.success(`${provider.name} deleted.`);
  }

  return (
    <>
      <PageHeader
        title="Providers"
        description="Requests go to the first enabled provider that serves the model; the next ones are fallbacks."
        actions={
          manage ? (
            <Link to="/providers/new" className="btn btn-primary">
              Add provider
            </Link>
          ) : undefined
        }
      />
      <Card>
        {providers.loading ? (
          <LoadingState label="Loading providers…" />
        ) : providers.error && !providers.data ? (
          <ErrorState error={providers.error} onRetry={providers.reload} title="Could not load providers" />
        ) : list.length === 0 ? (
          <EmptyState
            title="No providers yet"
            action={
              manage ? (
                <Link to="/providers/new" className="btn btn-primary">
                  Add your first provider
                </Link>
              ) : undefined
            }
          >
            Add an OpenAI, Anthropic, Gemini or OpenAI-compatible endpoint with its API key.
          </EmptyState>
        ) : (
          <div className="table-wrap">
            <table className="table">
              <caption className="sr-only">Providers in priority order</caption>
              <thead>
                <tr>
                  <th scope="col">Order</th>
                  <th scope="col">Name</th>
                  <th scope="col">Endpoint</th>
                  <th scope="col">Keys</th>
                  <th scope="col">Models</th>
                  <th scope="col">Enabled</th>
                  <th scope="col">
                    <span className="sr-only">Actions</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {list.map((provider, index) => {
                  const info = kindInfo(provider.kind);
                  const busy = pending !== null || !manage;
                  const mapped = Object.keys(provider.model_map).length;
                  return (
                    <tr key={provider.id} className={provider.enabled ? undefined : 'row-muted'}>
                      <td>
                        <div className="order-cell">
                          <span className="order-number" title={`Priority ${provider.priority}`}>
                            {index + 1}
                          </span>
                          <Button
                            size="sm"
                            variant="ghost"
                            aria-label={`Move ${provider.name} up`}
                            disabled={busy || index === 0}
                            onClick={() => move(index, 'up')}
                          >
                            ↑
                          </Button>
                          <Button
                            size="sm"
                            variant="ghost"
                            aria-label={`Move ${provider.name} down`}
                            disabled={busy || index === list.length - 1}
                            onClick={() => move(index, 'down')}
                          >
                            ↓
                          </Button>
                        </div>
                      </td>
                      <td>
                        <div className="cell-title">
                          <Link to={`/providers/${provider.id}`}>{provider.name}</Link>
                        </div>
                        <Badge tone="info">{info.label}</Badge>
                      </td>
                      <td className="cell-mono cell-wrap">
                        {provider.base_url ?? <span className="muted">{info.defaultBaseUrl ?? '—'} (default)</span>}
                      </td>
                      <td className="cell-mono">
                        {provider.has_key ? `…${provider.key_last4}` : 'no key'}
                        {(provider.keys?.length ?? 0) > 1 && (
                          <div className="muted small">
                            {provider.keys.length} keys, {provider.keys.filter((k) => k.enabled).length} enabled
                          </div>
                        )}
                      </td>
                      <td>
                        {provider.models.length === 0 ? (
                          <span className="muted">All models</span>
                        ) : (
                          <span className="cell-wrap">{provider.models.join(', ')}</span>
                        )}
                        {mapped > 0 && (
                          <div className="muted small">
                            {mapped} mapped {mapped === 1 ? 'model' : 'models'}
                          </div>
                        )}
                      </td>
                      <td>
                        <label className="switch">
                          <input
                            type="checkbox"
                            role="switch"
                            checked={provider.enabled}
                            disabled={busy}
                            aria-label={`Enable ${provider.name}`}
                            onChange={() => toggle(provider)}
                          />
                          <span className="switch-track" aria-hidden="true" />
                        </label>
                      </td>
                      <td className="cell-actions">
                        {manage && (
                          <>
                        <Link to={`/providers/${provider.id}`} className="btn btn-sm btn-secondary" aria-label={`Edit ${provider.name}`}>
                          Edit
                        </Link>
                        <Button size="sm" variant="ghost" className="text-danger" aria-label={`Delete ${provider.name}`} onClick={() => setToDelete(provider)}>
                          Delete
                        </Button>
                          </>
                        )}
                      </td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          </div>
        )}
      </Card>
      <ConfirmDialog
        open={toDelete !== null}
        title="Delete provider?"
        description={
          toDelete
            ? `“${toDelete.name}” and its stored API key will be removed. Requests will fall back to the other providers. This cannot be undone.`
            : ''
        }
        confirmLabel="Delete provider"
        onConfirm={() => (toDelete ? remove(toDelete) : undefined)}
        onClose={() => setToDelete(null)}
      />
    </>
  );
}
