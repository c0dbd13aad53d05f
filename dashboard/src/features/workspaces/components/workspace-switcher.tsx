import { useState, type FormEvent } from 'react';
import { useNavigate } from 'react-router-dom';
import { fieldErrors } from '@/lib/api';
import { toast } from '@/lib/toast-store';
import { Button } from '@/components/ui/button';
import { Dialog } from '@/components/ui/dialog';
import { TextField } from '@/components/ui/field';
import { useSession } from '@/features/auth/session-context';
import { createWorkspace } from '../api';
import { validateWorkspaceName } from '../schema';

export function WorkspaceSwitcher() {
  const { workspaces, workspaceId, selectWorkspace } = useSession();
  const [creating, setCreating] = useState(false);
  const navigate = useNavigate();

  return (
    <div className="workspace-switcher">
      <label htmlFor="workspace-select" className="sidebar-label">
        Workspace
      </label>
      <div className="workspace-row">
        <select
          id="workspace-select"
          className="input"
          value={workspaceId ?? ''}
          onChange={(e) => {
            selectWorkspace(e.target.value);
            navigate('/');
          }}
          disabled={workspaces.length === 0}
        >
          {workspaces.length === 0 && <option value="">No workspace</option>}
          {workspaces.map((w) => (
            <option key={w.id} value={w.id}>
              {w.name}
            </option>
          ))}
        </select>
        <Button size="sm" aria-label="New workspace" title="New workspace" onClick={() => setCreating(true)}>
          +
        </Button>
      </div>
      <NewWorkspaceDialog open={creating} onClose={() => setCreating(false)} />
    </div>
  );
}

export function NewWorkspaceDialog({ open, onClose }: { open: boolean; onClose: () => void }) {
  const { upsertWorkspace, selectWorkspace } = useSession();
  const navigate = useNavigate();
  const [name, setName] = useState('');
  const [error, setError] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);

  function close() {
    setName('');
    setError(undefined);
    onClose();
  }

  async function onSubmit(event: FormEvent) {
    event.preventDefault();
    const problem = validateWorkspaceName(name);
    setError(problem);
    if (problem) return;
    setBusy(true);
    try {
      const workspace = await createWorkspace(name.trim());
      upsertWorkspace(workspace);
      selectWorkspace(workspace.id);
      toast.success(`Workspace “${workspace.name}” created.`);
      close();
      navigate('/');
    } catch (err) {
      setError(fieldErrors(err).name);
    } finally {
      setBusy(false);
    }
  }

  return (
    <Dialog open={open} onClose={close} title="New workspace" description="Workspaces keep providers, keys, logs and usage apart.">
      <form onSubmit={onSubmit} noValidate className="form">
        <TextField label="Workspace name" value={name} onChange={(e) => setName(e.target.value)} error={error} maxLength={100} />
        <div className="form-actions">
          <Button onClick={close}>Cancel</Button>
          <Button type="submit" variant="primary" busy={busy}>
            Create workspace
          </Button>
        </div>
      </form>
    </Dialog>
  );
}
