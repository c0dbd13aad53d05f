import { useState } from 'react';
import { formatDateTime, formatRelative } from '@/lib/format';
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
import { deleteApiKey, listApiKeys, revokeApiKey } from '../api';
import { keyStatus, type ApiKey } from '../schema';
import { CreateKeyDialog } from './create-key-dialog';
import { KeyLimitsDialog } from './key-limits-dialog';
import { KeyUsage } from './key-usage';

const STATUS_TONE = { active: 'success', revoked: 'danger', expired: 'warning' } as const;
const STATUS_LABEL = { active: 'Active', revoked: 'Revoked', expired: 'Expired' } as const;

export function ApiKeysView() {
  const workspaceId = useWorkspaceId();
  const { workspace, user } = useSession();
  const canCreate = can(workspace?.role, 'createKeys');
  // Members manage the keys they created; admins and owners manage every key.
  const mayManage = (key: ApiKey) => can(workspace?.role, 'manageAnyKey') || (!!user && key.created_by === user.id);
  const keys = useResource((signal) => listApiKeys(workspaceId, signal), [workspaceId]);
  const [creating, setCreating] = useState(false);
  const [toRevoke, setToRevoke] = useState<ApiKey | null>(null);
  const [toDelete, setToDelete] = useState<ApiKey | null>(null);
  const [toLimit, setToLimit] = useState<ApiKey | null>(null);
  const list = keys.data ?? [];

  async function revoke(key: ApiKey) {
    const updated = await revokeApiKey(workspaceId, key.id);
    keys.setData((current) => (current ?? []).map((k) => (k.id === key.id ? { ...k, ...updated } : k)));
    toast.success(`Key “${key.name}” revoked.`);
  }

  async function remove(key: ApiKey) {
    await deleteApiKey(workspaceId, key.id);
    keys.setData((current) => (current ?? []).filter((k) => k.id !== key.id));
    toast.success(`Key “${key.name}” deleted.`);
  }

  return (
    <>
      <PageHeader
        title="API keys"
        description="Keys let your applications call the gateway. Each request is logged under its key."
        actions={
          canCreate ? (
            <Button variant="primary" onClick={() => setCreating(true)}>
              Create API key
            </Button>
          ) : undefined
        }
      />
      <Card>
        {keys.loading ? (
          <LoadingState label="Loading API keys…" />
        ) : keys.error && !keys.data ? (
          <ErrorState error={keys.error} onRetry={keys.reload} title="Could not load API keys" />
        ) : list.length === 0 ? (
          <EmptyState
            title="No API keys"
            action={
              canCreate ? (
                <Button variant="primary" onClick={() => setCreating(true)}>
                  Create your first key
                </Button>
              ) : undefined
            }
          >
            Create a key, then use it as the bearer token of your OpenAI client.
          </EmptyState>
        ) : (
          <div className="table-wrap">
            <table className="table">
              <caption className="sr-only">API keys</caption>
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  <th scope="col">Key</th>
                  <th scope="col">Created</th>
                  <th scope="col">Created by</th>
                  <th scope="col">Last used</th>
                  <th scope="col">Expires</th>
                  <th scope="col">Status</th>
                  <th scope="col">Usage and limits</th>
                  <th scope="col">
                    <span className="sr-only">Actions</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {list.map((key) => {
                  const status = keyStatus(key);
                  return (
                    <tr key={key.id} className={status === 'active' ? undefined : 'row-muted'}>
                      <td className="cell-title">{key.name}</td>
                      <td className="cell-mono">{key.prefix}…</td>
                      <td title={formatDateTime(key.created_at)}>{formatRelative(key.created_at)}</td>
                      <td>{key.created_by_email ?? <span className="muted">—</span>}</td>
                      <td title={key.last_used_at ? formatDateTime(key.last_used_at) : undefined}>
                        {key.last_used_at ? formatRelative(key.last_used_at) : <span className="muted">Never</span>}
                      </td>
                      <td>{key.expires_at ? formatDateTime(key.expires_at) : <span className="muted">Never</span>}</td>
                      <td>
                        <Badge tone={STATUS_TONE[status]}>{STATUS_LABEL[status]}</Badge>
                      </td>
                      <td>
                        <KeyUsage apiKey={key} withUsage={mayManage(key)} />
                      </td>
                      <td className="cell-actions">
                        {status === 'active' && mayManage(key) && (
                          <Button size="sm" aria-label={`Limits of ${key.name}`} onClick={() => setToLimit(key)}>
                            Limits
                          </Button>
                        )}
                        {status === 'active' && mayManage(key) && (
                          <Button size="sm" aria-label={`Revoke ${key.name}`} onClick={() => setToRevoke(key)}>
                            Revoke
                          </Button>
                        )}
                        {mayManage(key) && (
                          <Button size="sm" variant="ghost" className="text-danger" aria-label={`Delete ${key.name}`} onClick={() => setToDelete(key)}>
                            Delete
                          </Button>
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

      <CreateKeyDialog
        open={creating}
        onClose={() => setCreating(false)}
        onCreated={(created) => {
          const { key: _plaintext, ...stored } = created;
          void _plaintext;
          keys.setData((current) => [stored, ...(current ?? []).filter((k) => k.id !== stored.id)]);
        }}
      />
      <KeyLimitsDialog
        apiKey={toLimit}
        onClose={() => setToLimit(null)}
        onSaved={(saved) => {
          keys.setData((current) => (current ?? []).map((k) => (k.id === saved.id ? { ...k, ...saved } : k)));
          toast.success(`Limits of “${saved.name}” saved.`);
        }}
      />
      <ConfirmDialog
        open={toRevoke !== null}
        title="Revoke API key?"
        description={toRevoke ? `Requests with “${toRevoke.name}” (${toRevoke.prefix}…) will be refused from now on. This cannot be undone.` : ''}
        confirmLabel="Revoke key"
        onConfirm={() => (toRevoke ? revoke(toRevoke) : undefined)}
        onClose={() => setToRevoke(null)}
      />
      <ConfirmDialog
        open={toDelete !== null}
        title="Delete API key?"
        description={
          toDelete
            ? `“${toDelete.name}” (${toDelete.prefix}…) will be removed${keyStatus(toDelete) === 'active' ? ' and stop working at once' : ''}. Its past requests stay in the logs.`
            : ''
        }
        confirmLabel="Delete key"
        onConfirm={() => (toDelete ? remove(toDelete) : undefined)}
        onClose={() => setToDelete(null)}
      />
    </>
  );
}
