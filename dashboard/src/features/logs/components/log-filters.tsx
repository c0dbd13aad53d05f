import { useEffect, useState, type FormEvent } from 'react';
import { Button } from '@/components/ui/button';
import { SelectField, TextField } from '@/components/ui/field';
import type { ApiKey } from '@/features/api-keys/schema';
import type { Provider } from '@/features/providers/schema';
import { EMPTY_FILTERS, hasFilters, KEY_PICKER_MAX, validateFilters, type LogFilters as Filters } from '../schema';

interface LogFiltersProps {
  value: Filters;
  providers: Provider[];
  /** The workspace's keys, to pick one by name (past `KEY_PICKER_MAX`, its id is typed). */
  apiKeys: ApiKey[];
  onApply: (filters: Filters) => void;
}

function keyLabel(k: ApiKey): string {
  const label = k.label ? ` · ${k.label}` : '';
  const revoked = k.revoked_at ? ' (revoked)' : '';
  return `${k.name} (${k.prefix}…)${label}${revoked}`;
}

export function LogFilters({ value, providers, apiKeys, onApply }: LogFiltersProps) {
  const [draft, setDraft] = useState<Filters>(value);
  const [errors, setErrors] = useState<Partial<Record<keyof Filters, string>>>({});
  useEffect(() => setDraft(value), [value]);

  function set(key: keyof Filters, v: string) {
    setDraft((d) => ({ ...d, [key]: v }));
  }

  function onSubmit(event: FormEvent) {
    event.preventDefault();
    const found = validateFilters(draft);
    setErrors(found);
    if (Object.keys(found).length === 0) onApply(draft);
  }

  return (
    <form className="filters" onSubmit={onSubmit} noValidate aria-label="Log filters">
      <SelectField label="Provider" value={draft.provider} onChange={(e) => set('provider', e.target.value)}>
        <option value="">All providers</option>
        {providers.map((p) => (
          <option key={p.id} value={p.id}>
            {p.name}
          </option>
        ))}
      </SelectField>
      {apiKeys.length <= KEY_PICKER_MAX ? (
        <SelectField label="API key" value={draft.api_key_id} onChange={(e) => set('api_key_id', e.target.value)} error={errors.api_key_id}>
          <option value="">All keys</option>
          {apiKeys.map((k) => (
            <option key={k.id} value={k.id}>
              {keyLabel(k)}
            </option>
          ))}
          {/* A key deleted since, or one named in the URL: its rows are still listed under its id. */}
          {draft.api_key_id && !apiKeys.some((k) => k.id === draft.api_key_id) && (
            <option value={draft.api_key_id}>{draft.api_key_id}</option>
          )}
        </SelectField>
      ) : (
        <TextField
          label="API key id"
          value={draft.api_key_id}
          onChange={(e) => set('api_key_id', e.target.value)}
          placeholder="the key's id"
          error={errors.api_key_id}
        />
      )}
      <TextField label="Model" value={draft.model} onChange={(e) => set('model', e.target.value)} placeholder="e.g. gpt-4o-mini" />
      <TextField
        label="Status"
        inputMode="numeric"
        value={draft.status}
        onChange={(e) => set('status', e.target.value)}
        placeholder="e.g. 429"
        error={errors.status}
        className="field-narrow"
      />
      <TextField
        label="From"
        type="datetime-local"
        value={draft.from}
        onChange={(e) => set('from', e.target.value)}
        error={errors.from}
        className="field-time"
      />
      <TextField
        label="To"
        type="datetime-local"
        value={draft.to}
        onChange={(e) => set('to', e.target.value)}
        error={errors.to}
        className="field-time"
      />
      <div className="filters-actions">
        <Button type="submit" variant="primary">
          Apply filters
        </Button>
        {(hasFilters(value) || hasFilters(draft)) && (
          <Button
            onClick={() => {
              setErrors({});
              setDraft(EMPTY_FILTERS);
              onApply(EMPTY_FILTERS);
            }}
          >
            Clear
          </Button>
        )}
      </div>
    </form>
  );
}
