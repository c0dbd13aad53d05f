import { useEffect, useState, type FormEvent } from 'react';
import { fieldErrors } from '@/lib/api';
import { toast } from '@/lib/toast-store';
import { useResource } from '@/lib/use-resource';
import { Button } from '@/components/ui/button';
import { Card } from '@/components/ui/card';
import { ConfirmDialog } from '@/components/ui/confirm-dialog';
import { SelectField, TextField } from '@/components/ui/field';
import { ErrorState, LoadingState } from '@/components/ui/states';
import { getWorkspace, purgeWorkspaceCache, setWorkspaceCache, type CacheMode } from '../api';
import { validateCacheTtl } from '../schema';

interface WorkspaceCacheProps {
  workspaceId: string;
  /** The settings are shown but cannot be changed. */
  readOnly?: boolean;
  /** The caller may empty the cache. */
  canPurge?: boolean;
}

/** The response cache: whether gateways answer repeated requests from it, and for how long. */
export function WorkspaceCache({ workspaceId, readOnly = false, canPurge = false }: WorkspaceCacheProps) {
  const current = useResource((signal) => getWorkspace(workspaceId, signal), [workspaceId]);
  const [mode, setMode] = useState<CacheMode>('off');
  const [ttl, setTtl] = useState('3600');
  const [errors, setErrors] = useState<{ mode?: string; ttl?: string }>({});
  const [busy, setBusy] = useState(false);
  const [purging, setPurging] = useState(false);

  useEffect(() => {
    if (current.data?.cache) {
      setMode(current.data.cache.mode);
      setTtl(String(current.data.cache.ttl_seconds));
    }
  }, [current.data]);

  async function onSubmit(event: FormEvent) {
    event.preventDefault();
    const problem = validateCacheTtl(ttl);
    setErrors({ ttl: problem });
    if (problem) return;
    setBusy(true);
    try {
      const updated = await setWorkspaceCache(workspaceId, { mode, ttl_seconds: Number(ttl.trim()) });
      current.setData(() => updated);
      toast.success('Cache settings saved.');
    } catch (err) {
      const fields = fieldErrors(err);
      setErrors({ mode: fields['cache.mode'], ttl: fields['cache.ttl_seconds'] });
    } finally {
      setBusy(false);
    }
  }

  async function purge() {
    await purgeWorkspaceCache(workspaceId);
    toast.success('Cache purged: no answer stored before now will be served again.');
  }

  return (
    <Card
      title="Cache"
      description="Gateways can answer a repeated request from a stored answer, without calling a provider: no provider cost, tokens counted apart as cache hits. Entries are never shared with another workspace."
    >
      {current.loading ? (
        <LoadingState label="Loading cache settings…" />
      ) : current.error && !current.data ? (
        <ErrorState error={current.error} onRetry={current.reload} title="Could not load the cache settings" />
      ) : (
        <>
          <form onSubmit={onSubmit} noValidate className="form">
            <fieldset disabled={readOnly} className="fieldset-plain">
              <SelectField
                label="Mode"
                value={mode}
                error={errors.mode}
                onChange={(e) => setMode(e.target.value as CacheMode)}
              >
                <option value="off">Off: nothing is cached</option>
                <option value="on">On: every cacheable request</option>
                <option value="opt_in">Opt-in: only requests sending Cache-Control: max-age=N</option>
              </SelectField>
              <TextField
                label="Time to live (seconds)"
                inputMode="numeric"
                value={ttl}
                error={errors.ttl}
                hint="How long a stored answer may serve: 1 second to 30 days (2,592,000)."
                onChange={(e) => setTtl(e.target.value)}
              />
              <div className="form-actions">
                <Button type="submit" variant="primary" busy={busy}>
                  Save cache
                </Button>
              </div>
            </fieldset>
          </form>
          {canPurge && (
            <div className="form-actions">
              <Button variant="danger" onClick={() => setPurging(true)}>
                Purge cache
              </Button>
            </div>
          )}
        </>
      )}
      <ConfirmDialog
        open={purging}
        title="Purge the cache?"
        description="Every gateway stops serving the answers stored so far; the next requests go to the providers again."
        confirmLabel="Purge cache"
        onConfirm={purge}
        onClose={() => setPurging(false)}
      />
    </Card>
  );
}
