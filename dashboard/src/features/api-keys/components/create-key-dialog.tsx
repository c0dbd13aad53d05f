import { useState, type FormEvent } from 'react';
import { fieldErrors } from '@/lib/api';
import { Button } from '@/components/ui/button';
import { CopyButton } from '@/components/ui/copy-button';
import { Dialog } from '@/components/ui/dialog';
import { SelectField, TextField } from '@/components/ui/field';
import { useWorkspaceId } from '@/features/auth/session-context';
import { createApiKey } from '../api';
import { KEY_CACHE_MODES, validateApiKeyForm, valuesToApiKeyInput, type CreatedApiKey, type KeyCacheMode } from '../schema';

interface CreateKeyDialogProps {
  open: boolean;
  onClose: () => void;
  onCreated: (key: CreatedApiKey) => void;
}

export function CreateKeyDialog({ open, onClose, onCreated }: CreateKeyDialogProps) {
  const workspaceId = useWorkspaceId();
  const [name, setName] = useState('');
  const [expiresAt, setExpiresAt] = useState('');
  const [cacheMode, setCacheMode] = useState<KeyCacheMode>('inherit');
  const [errors, setErrors] = useState<Partial<Record<string, string>>>({});
  const [busy, setBusy] = useState(false);
  const [created, setCreated] = useState<CreatedApiKey | null>(null);

  function close() {
    setName('');
    setExpiresAt('');
    setCacheMode('inherit');
    setErrors({});
    setCreated(null);
    onClose();
  }

  async function onSubmit(event: FormEvent) {
    event.preventDefault();
    const values = { name, expiresAt, cacheMode };
    const found = validateApiKeyForm(values);
    setErrors(found);
    if (Object.keys(found).length > 0) return;
    setBusy(true);
    try {
      const key = await createApiKey(workspaceId, valuesToApiKeyInput(values));
      setCreated(key);
      onCreated(key);
    } catch (error) {
      setErrors(fieldErrors(error));
    } finally {
      setBusy(false);
    }
  }

  if (created) {
    return (
      <Dialog
        open={open}
        onClose={close}
        title="API key created"
        dismissible={false}
        footer={
          <Button variant="primary" onClick={close}>
            Done
          </Button>
        }
      >
        <div className="banner banner-warning" role="note">
          Copy this key now. It will not be shown again; if you lose it, create a new one.
        </div>
        <div className="secret">
          <label htmlFor="new-api-key" className="field-label">
            New API key
          </label>
          <div className="secret-row">
            <input id="new-api-key" className="input input-mono" readOnly value={created.key} data-autofocus onFocus={(e) => e.currentTarget.select()} />
            <CopyButton text={created.key} label="Copy key" size="md" />
          </div>
          <p className="field-hint">Name: {created.name}</p>
        </div>
      </Dialog>
    );
  }

  return (
    <Dialog open={open} onClose={close} title="Create API key" description="Clients send this key as a bearer token to the gateway.">
      <form onSubmit={onSubmit} noValidate className="form">
        <TextField label="Key name" value={name} onChange={(e) => setName(e.target.value)} error={errors.name} placeholder="e.g. production backend" maxLength={100} />
        <TextField
          label="Expires at"
          type="datetime-local"
          value={expiresAt}
          onChange={(e) => setExpiresAt(e.target.value)}
          error={errors.expires_at}
          hint="Optional. Leave empty for a key that does not expire."
        />
        <SelectField label="Response cache" value={cacheMode} onChange={(e) => setCacheMode(e.target.value as KeyCacheMode)} error={errors.cache_mode}>
          {KEY_CACHE_MODES.map((m) => (
            <option key={m.value} value={m.value}>
              {m.label}
            </option>
          ))}
        </SelectField>
        <div className="form-actions">
          <Button onClick={close}>Cancel</Button>
          <Button type="submit" variant="primary" busy={busy}>
            Create key
          </Button>
        </div>
      </form>
    </Dialog>
  );
}
