import { useEffect, useState, type FormEvent } from 'react';
import { fieldErrors } from '@/lib/api';
import { toast } from '@/lib/toast-store';
import { useResource } from '@/lib/use-resource';
import { Button } from '@/components/ui/button';
import { Card } from '@/components/ui/card';
import { SelectField } from '@/components/ui/field';
import { ErrorState, LoadingState } from '@/components/ui/states';
import { getWorkspace, setWorkspaceRouting, type RoutingStrategy } from '../api';

/** How the provider entries of one priority share its traffic. */
export function WorkspaceRouting({ workspaceId, readOnly = false }: { workspaceId: string; readOnly?: boolean }) {
  const current = useResource((signal) => getWorkspace(workspaceId, signal), [workspaceId]);
  const [strategy, setStrategy] = useState<RoutingStrategy>('weighted');
  const [sticky, setSticky] = useState(false);
  const [error, setError] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    if (current.data?.routing) {
      setStrategy(current.data.routing.strategy);
      setSticky(current.data.routing.sticky);
    }
  }, [current.data]);

  async function onSubmit(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      const updated = await setWorkspaceRouting(workspaceId, { strategy, sticky });
      current.setData(() => updated);
      toast.success('Routing saved.');
    } catch (err) {
      setError(fieldErrors(err)['routing.strategy'] ?? 'Could not save the routing strategy.');
    } finally {
      setBusy(false);
    }
  }

  return (
    <Card
      title="Routing"
      description="How provider entries of the same priority share its traffic. Each entry's weight sets its share; weight 0 is a standby, used only when the others fail."
    >
      {current.loading ? (
        <LoadingState label="Loading routing…" />
      ) : current.error && !current.data ? (
        <ErrorState error={current.error} onRetry={current.reload} title="Could not load the routing" />
      ) : (
        <form onSubmit={onSubmit} noValidate className="form">
          <fieldset disabled={readOnly} className="fieldset-plain">
            <SelectField
              label="Strategy"
              value={strategy}
              error={error}
              onChange={(e) => setStrategy(e.target.value as RoutingStrategy)}
            >
              <option value="weighted">Weighted: each entry gets its weight's share</option>
              <option value="latency">Latency: the faster entries get more, weights as a prior</option>
            </SelectField>
            <label className="checkbox">
              <input type="checkbox" checked={sticky} onChange={(e) => setSticky(e.target.checked)} />
              Keep each conversation (or user) on one entry while it is healthy, so the provider's prompt cache keeps hitting
            </label>
            <div className="form-actions">
              <Button type="submit" variant="primary" busy={busy}>
                Save routing
              </Button>
            </div>
          </fieldset>
        </form>
      )}
    </Card>
  );
}
