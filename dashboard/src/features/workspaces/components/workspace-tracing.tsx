import { useEffect, useState, type FormEvent } from 'react';
import { toast } from '@/lib/toast-store';
import { useResource } from '@/lib/use-resource';
import { Button } from '@/components/ui/button';
import { Card } from '@/components/ui/card';
import { ErrorState, LoadingState } from '@/components/ui/states';
import { getWorkspace, setWorkspaceTracing } from '../api';

/** What the trace spans of the workspace's requests may carry. */
export function WorkspaceTracing({ workspaceId, readOnly = false }: { workspaceId: string; readOnly?: boolean }) {
  const current = useResource((signal) => getWorkspace(workspaceId, signal), [workspaceId]);
  const [capture, setCapture] = useState(false);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    if (current.data?.tracing) setCapture(current.data.tracing.capture_content);
  }, [current.data]);

  async function onSubmit(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    try {
      const updated = await setWorkspaceTracing(workspaceId, { capture_content: capture });
      current.setData(() => updated);
      toast.success('Tracing saved.');
    } catch {
      toast.error('Could not save the tracing settings.');
    } finally {
      setBusy(false);
    }
  }

  return (
    <Card
      title="Tracing"
      description="Gateways export a trace span per request and per provider attempt when tracing is configured. Message content stays out of the spans unless you let it in here."
    >
      {current.loading ? (
        <LoadingState label="Loading tracing…" />
      ) : current.error && !current.data ? (
        <ErrorState error={current.error} onRetry={current.reload} title="Could not load the tracing settings" />
      ) : (
        <form onSubmit={onSubmit} noValidate className="form">
          <fieldset disabled={readOnly} className="fieldset-plain">
            <label className="checkbox">
              <input type="checkbox" checked={capture} onChange={(e) => setCapture(e.target.checked)} />
              Capture message content (prompts and answers, size-capped) in the exported spans
            </label>
            <div className="form-actions">
              <Button type="submit" variant="primary" busy={busy}>
                Save tracing
              </Button>
            </div>
          </fieldset>
        </form>
      )}
    </Card>
  );
}
