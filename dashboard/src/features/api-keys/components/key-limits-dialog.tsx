import { useEffect, useState, type FormEvent } from 'react';
import { fieldErrors } from '@/lib/api';
import { Button } from '@/components/ui/button';
import { Dialog } from '@/components/ui/dialog';
import { SelectField, TextField } from '@/components/ui/field';
import { useWorkspaceId } from '@/features/auth/session-context';
import { updateApiKey } from '../api';
import {
  KEY_CACHE_MODES,
  limitsFormFrom,
  limitsFormToInput,
  validateLimitsForm,
  type ApiKey,
  type BudgetPeriod,
  type KeyCacheMode,
  type LimitsFormValues,
} from '../schema';

interface KeyLimitsDialogProps {
  apiKey: ApiKey | null;
  onClose: () => void;
  onSaved: (key: ApiKey) => void;
}

/** Limits, allowed models and metadata of one key; gateways apply a change within a second. */
export function KeyLimitsDialog({ apiKey, onClose, onSaved }: KeyLimitsDialogProps) {
  const workspaceId = useWorkspaceId();
  const [values, setValues] = useState<LimitsFormValues>(() => limitsFormFrom(apiKey ?? {}));
  const [errors, setErrors] = useState<Partial<Record<string, string>>>({});
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    setValues(limitsFormFrom(apiKey ?? {}));
    setErrors({});
  }, [apiKey]);

  const set = (field: keyof LimitsFormValues) => (e: { target: { value: string } }) => setValues((v) => ({ ...v, [field]: e.target.value }));

  async function onSubmit(event: FormEvent) {
    event.preventDefault();
    if (!apiKey) return;
    const found = validateLimitsForm(values);
    setErrors(found);
    if (Object.keys(found).length > 0) return;
    setBusy(true);
    try {
      const saved = await updateApiKey(workspaceId, apiKey.id, limitsFormToInput(values, apiKey.expires_at));
      onSaved(saved);
      onClose();
    } catch (error) {
      const server = fieldErrors(error);
      setErrors(Object.fromEntries(Object.entries(server).map(([k, v]) => [k.replace(/^limits\./, ''), v])));
    } finally {
      setBusy(false);
    }
  }

  return (
    <Dialog open={apiKey !== null} onClose={onClose} title="Key limits" description={apiKey ? `Limits of “${apiKey.name}”. Leave a field empty for no limit.` : undefined}>
      <form onSubmit={onSubmit} noValidate className="form">
        <TextField label="Requests per minute" inputMode="numeric" value={values.rpm} onChange={set('rpm')} error={errors.rpm} />
        <TextField label="Tokens per minute" inputMode="numeric" value={values.tpm} onChange={set('tpm')} error={errors.tpm} />
        <TextField label="Concurrent requests" inputMode="numeric" value={values.maxConcurrency} onChange={set('maxConcurrency')} error={errors.max_concurrency} />
        <TextField label="Budget (USD)" inputMode="decimal" value={values.budgetUsd} onChange={set('budgetUsd')} error={errors.budget_usd} hint="Requests are refused once the period's spend reaches it." />
        <SelectField label="Budget period" value={values.budgetPeriod} onChange={(e) => setValues((v) => ({ ...v, budgetPeriod: e.target.value as BudgetPeriod }))}>
          <option value="day">Day (UTC)</option>
          <option value="week">Week (UTC, from Monday)</option>
          <option value="month">Month (UTC)</option>
        </SelectField>
        <TextField
          label="Allowed models"
          value={values.allowedModels}
          onChange={set('allowedModels')}
          error={errors.allowed_models}
          hint="Comma separated; a trailing * matches a prefix (gpt-4o*). Empty allows every model."
        />
        <SelectField
          label="Response cache"
          value={values.cacheMode}
          error={errors.cache_mode}
          onChange={(e) => setValues((v) => ({ ...v, cacheMode: e.target.value as KeyCacheMode }))}
        >
          {KEY_CACHE_MODES.map((m) => (
            <option key={m.value} value={m.value}>
              {m.label}
            </option>
          ))}
        </SelectField>
        <TextField label="Label" value={values.label} onChange={set('label')} error={errors.label} maxLength={100} />
        <TextField label="Owner email" type="email" value={values.ownerEmail} onChange={set('ownerEmail')} error={errors.owner_email} />
        <div className="form-actions">
          <Button onClick={onClose}>Cancel</Button>
          <Button type="submit" variant="primary" busy={busy}>
            Save limits
          </Button>
        </div>
      </form>
    </Dialog>
  );
}
