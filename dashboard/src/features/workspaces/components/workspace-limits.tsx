import { useEffect, useState, type FormEvent } from 'react';
import { fieldErrors } from '@/lib/api';
import { toast } from '@/lib/toast-store';
import { useResource } from '@/lib/use-resource';
import { Button } from '@/components/ui/button';
import { Card } from '@/components/ui/card';
import { SelectField, TextField } from '@/components/ui/field';
import { ErrorState, LoadingState } from '@/components/ui/states';
import { limitsFormFrom, limitsFormToInput, validateLimitsForm, type BudgetPeriod, type LimitsFormValues } from '@/features/api-keys/schema';
import { getWorkspace, setWorkspaceLimits } from '../api';

/** Limits shared by every key of the workspace. */
export function WorkspaceLimits({ workspaceId, name, readOnly = false }: { workspaceId: string; name: string; readOnly?: boolean }) {
  const current = useResource((signal) => getWorkspace(workspaceId, signal), [workspaceId]);
  const [values, setValues] = useState<LimitsFormValues>(() => limitsFormFrom({}));
  const [errors, setErrors] = useState<Partial<Record<string, string>>>({});
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    if (current.data) setValues(limitsFormFrom({ limits: current.data.limits }));
  }, [current.data]);

  const set = (field: keyof LimitsFormValues) => (e: { target: { value: string } }) => setValues((v) => ({ ...v, [field]: e.target.value }));

  async function onSubmit(event: FormEvent) {
    event.preventDefault();
    const found = validateLimitsForm(values);
    setErrors(found);
    if (Object.keys(found).length > 0) return;
    setBusy(true);
    try {
      const updated = await setWorkspaceLimits(workspaceId, name, limitsFormToInput(values, null).limits);
      current.setData(() => updated);
      toast.success('Workspace limits saved.');
    } catch (err) {
      const server = fieldErrors(err);
      setErrors(Object.fromEntries(Object.entries(server).map(([k, v]) => [k.replace(/^limits\./, ''), v])));
    } finally {
      setBusy(false);
    }
  }

  return (
    <Card title="Workspace limits" description="Shared by every key of the workspace, on top of each key's own limits. Leave a field empty for no limit.">
      {current.loading ? (
        <LoadingState label="Loading limits…" />
      ) : current.error && !current.data ? (
        <ErrorState error={current.error} onRetry={current.reload} title="Could not load the limits" />
      ) : (
        <form onSubmit={onSubmit} noValidate className="form">
          <fieldset disabled={readOnly} className="fieldset-plain">
          <TextField label="Workspace requests per minute" inputMode="numeric" value={values.rpm} onChange={set('rpm')} error={errors.rpm} />
          <TextField label="Workspace tokens per minute" inputMode="numeric" value={values.tpm} onChange={set('tpm')} error={errors.tpm} />
          <TextField label="Workspace concurrent requests" inputMode="numeric" value={values.maxConcurrency} onChange={set('maxConcurrency')} error={errors.max_concurrency} />
          <TextField label="Workspace budget (USD)" inputMode="decimal" value={values.budgetUsd} onChange={set('budgetUsd')} error={errors.budget_usd} />
          <SelectField label="Workspace budget period" value={values.budgetPeriod} onChange={(e) => setValues((v) => ({ ...v, budgetPeriod: e.target.value as BudgetPeriod }))}>
            <option value="day">Day (UTC)</option>
            <option value="week">Week (UTC, from Monday)</option>
            <option value="month">Month (UTC)</option>
          </SelectField>
          <div className="form-actions">
            <Button type="submit" variant="primary" busy={busy}>
              Save workspace limits
            </Button>
          </div>
          </fieldset>
        </form>
      )}
    </Card>
  );
}
