import { useEffect, useState, type FormEvent } from 'react';
import { useNavigate } from 'react-router-dom';
import { fieldErrors } from '@/lib/api';
import { formatDate } from '@/lib/format';
import { toast } from '@/lib/toast-store';
import { Button } from '@/components/ui/button';
import { Card } from '@/components/ui/card';
import { TextField } from '@/components/ui/field';
import { ConfirmDialog } from '@/components/ui/confirm-dialog';
import { useSession } from '@/features/auth/session-context';
import { can } from '@/features/members/schema';
import { deleteWorkspace, renameWorkspace } from '../api';
import { validateWorkspaceName } from '../schema';
import { WorkspaceLimits } from './workspace-limits';
import { WorkspaceCache } from './workspace-cache';
import { WorkspaceRouting } from './workspace-routing';
import { WorkspaceTracing } from './workspace-tracing';

export function WorkspaceSettings() {
  const { workspace, upsertWorkspace, user, retry } = useSession();
  const navigate = useNavigate();
  const [deleting, setDeleting] = useState(false);
  const [name, setName] = useState(workspace?.name ?? '');
  const [error, setError] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);

  useEffect(() => setName(workspace?.name ?? ''), [workspace?.id, workspace?.name]);

  if (!workspace) return null;
  const editable = can(workspace.role, 'editWorkspace');

  async function remove() {
    if (!workspace) return;
    const deleted = await deleteWorkspace(workspace.id);
    toast.success(
      `${workspace.name} was deleted; ${deleted.revoked_api_keys} API ${deleted.revoked_api_keys === 1 ? 'key was' : 'keys were'} revoked.`,
    );
    retry();
    navigate('/');
  }

  async function onSubmit(event: FormEvent) {
    event.preventDefault();
    if (!workspace) return;
    const problem = validateWorkspaceName(name);
    setError(problem);
    if (problem) return;
    setBusy(true);
    try {
      const updated = await renameWorkspace(workspace.id, name.trim());
      upsertWorkspace(updated);
      toast.success('Workspace renamed.');
    } catch (err) {
      setError(fieldErrors(err).name);
    } finally {
      setBusy(false);
    }
  }

  return (
    <div className="stack">
      <Card title="Workspace" description={`Created ${formatDate(workspace.created_at)} · your role: ${workspace.role}`}>
        <form onSubmit={onSubmit} noValidate className="form form-inline">
          <fieldset disabled={!editable} className="fieldset-plain">
          <TextField label="Workspace name" value={name} onChange={(e) => setName(e.target.value)} error={error} maxLength={100} />
          <Button type="submit" variant="primary" busy={busy} disabled={name.trim() === workspace.name}>
            Save name
          </Button>
          </fieldset>
        </form>
        <dl className="details">
          <dt>Workspace ID</dt>
          <dd>
            <code>{workspace.id}</code>
          </dd>
        </dl>
      </Card>
      <WorkspaceLimits workspaceId={workspace.id} name={workspace.name} readOnly={!editable} />
      <WorkspaceRouting workspaceId={workspace.id} readOnly={!editable} />
      <WorkspaceCache workspaceId={workspace.id} readOnly={!editable} canPurge={can(workspace.role, 'purgeCache')} />
      <WorkspaceTracing workspaceId={workspace.id} readOnly={!editable} />
      {can(workspace.role, 'deleteWorkspace') && (
        <Card title="Delete workspace" description="API keys stop working at once; providers, members and invitations are removed. Logs and usage are kept for a while, then dropped.">
          <Button variant="danger" onClick={() => setDeleting(true)}>
            Delete this workspace
          </Button>
        </Card>
      )}
      <ConfirmDialog
        open={deleting}
        title={`Delete ${workspace.name}?`}
        description="Every API key of this workspace is revoked at once. This cannot be undone."
        confirmLabel="Delete workspace"
        onConfirm={remove}
        onClose={() => setDeleting(false)}
      />
      {user && (
        <Card title="Account">
          <dl className="details">
            <dt>Email</dt>
            <dd>{user.email}</dd>
            <dt>Member since</dt>
            <dd>{formatDate(user.created_at)}</dd>
          </dl>
        </Card>
      )}
    </div>
  );
}
