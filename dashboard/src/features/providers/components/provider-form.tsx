import { useState, type FormEvent } from 'react';
import { ApiError, fieldErrors } from '@/lib/api';
import { Button } from '@/components/ui/button';
import { SelectField, TextField } from '@/components/ui/field';
import {
  kindInfo,
  PROVIDER_KINDS,
  requiresBaseUrl,
  validateProviderForm,
  valuesToInput,
  type Provider,
  type ProviderFormErrors,
  type ProviderFormValues,
  type ProviderInput,
  type ProviderKind,
} from '../schema';
import { KeyPoolEditor } from './key-pool-editor';
import { ModelMapEditor } from './model-map-editor';

interface ProviderFormProps {
  mode: 'create' | 'edit';
  initialValues: ProviderFormValues;
  original?: Provider;
  onSubmit: (input: ProviderInput) => Promise<unknown>;
  onCancel: () => void;
}

/** Whether any message concerns the pool of keys. */
function hasKeyError(errors: ProviderFormErrors): boolean {
  return Object.keys(errors).some((field) => field === 'api_key' || field === 'keys' || field.startsWith('keys.'));
}

export function ProviderForm({ mode, initialValues, original, onSubmit, onCancel }: ProviderFormProps) {
  const [values, setValues] = useState<ProviderFormValues>(initialValues);
  const [errors, setErrors] = useState<ProviderFormErrors>({});
  const [busy, setBusy] = useState(false);
  const [advanced, setAdvanced] = useState(
    !requiresBaseUrl(initialValues.kind) && initialValues.baseUrl.trim() !== '',
  );
  // On an existing entry the pool is replaced only on demand (its keys are managed one by
  // one on the provider's page), or when a move of the entry needs the keys again.
  const [replacing, setReplacing] = useState(mode === 'create');

  const info = kindInfo(values.kind);
  const needsBaseUrl = requiresBaseUrl(values.kind);

  function set<K extends keyof ProviderFormValues>(key: K, value: ProviderFormValues[K]) {
    setValues((v) => ({ ...v, [key]: value }));
  }

  async function handleSubmit(event: FormEvent) {
    event.preventDefault();
    const found = validateProviderForm(values, mode, original);
    setErrors(found);
    if (Object.keys(found).length > 0) {
      if (found.base_url && !needsBaseUrl) setAdvanced(true);
      if (hasKeyError(found)) setReplacing(true);
      return;
    }
    setBusy(true);
    try {
      await onSubmit(valuesToInput(values, mode, original));
    } catch (error) {
      const serverErrors: ProviderFormErrors = fieldErrors(error);
      // A name clash comes back as 409 without fields: show it on the name.
      if (error instanceof ApiError && error.status === 409 && Object.keys(serverErrors).length === 0)
        serverErrors.name = 'A provider with this name already exists in the workspace.';
      setErrors(serverErrors);
      if (serverErrors.base_url && !needsBaseUrl) setAdvanced(true);
      if (hasKeyError(serverErrors)) setReplacing(true);
      setBusy(false);
    }
  }

  const baseUrlField = (
    <TextField
      label={needsBaseUrl ? 'Base URL' : 'Base URL override'}
      type="url"
      inputMode="url"
      placeholder={needsBaseUrl ? 'https://llm.example.com/v1' : (info.defaultBaseUrl ?? '')}
      value={values.baseUrl}
      onChange={(e) => set('baseUrl', e.target.value)}
      error={errors.base_url}
      hint={
        needsBaseUrl
          ? 'The endpoint that serves /chat/completions, usually ending in /v1.'
          : `Leave empty to use ${info.defaultBaseUrl}.`
      }
    />
  );

  return (
    <form onSubmit={handleSubmit} noValidate className="form provider-form" aria-label={mode === 'create' ? 'Add provider' : 'Edit provider'}>
      <div className="form-grid">
        <SelectField
          label="Kind"
          value={values.kind}
          onChange={(e) => set('kind', e.target.value as ProviderKind)}
          error={errors.kind}
        >
          {PROVIDER_KINDS.map((k) => (
            <option key={k.value} value={k.value}>
              {k.label}
            </option>
          ))}
        </SelectField>
        <TextField
          label="Name"
          value={values.name}
          onChange={(e) => set('name', e.target.value)}
          error={errors.name}
          placeholder={`e.g. ${info.label} primary`}
          maxLength={100}
          hint="Shown in logs and usage. Must be unique in the workspace."
        />
      </div>

      {needsBaseUrl && baseUrlField}

      {mode === 'edit' && original && (
        <div className="field">
          <span className="field-label">Keys</span>
          <p className="field-hint">
            {original.keys.length === 0
              ? 'This entry sends no key.'
              : `${original.keys.length} ${original.keys.length === 1 ? 'key' : 'keys'}: ${original.keys
                  .map((k) => `${k.label} (…${k.key_last4})`)
                  .join(', ')}. Add, switch off, re-weight or remove one below.`}
          </p>
          {!replacing && (
            <div>
              <Button size="sm" onClick={() => setReplacing(true)}>
                {original.keys.length === 0 ? 'Add keys' : 'Replace all keys'}
              </Button>
            </div>
          )}
        </div>
      )}
      {replacing && (
        <KeyPoolEditor
          rows={values.keys}
          onChange={(rows) => set('keys', rows)}
          errors={errors}
          legend={mode === 'create' ? 'Keys' : 'New keys'}
          keyLabel={mode === 'create' ? 'API key' : 'New API key'}
          placeholder={mode === 'create' ? info.keyPlaceholder : 'The key to use from now on'}
          hint={
            mode === 'edit'
              ? 'The keys entered here replace every key of this entry; leave them empty to keep the current ones. Changing the kind or base URL needs the keys again.'
              : values.kind === 'openai_compatible'
                ? 'Leave empty for a server that needs no key (Ollama, vLLM, llama.cpp). Several keys share the traffic by weight (0 = standby). Stored encrypted.'
                : 'Several keys share this provider’s traffic by weight (0 = standby, used when the others are out). Stored encrypted; only the last four characters are shown again.'
          }
        />
      )}

      <div className="form-grid">
        <TextField
          label="Priority"
          type="number"
          inputMode="numeric"
          step={1}
          value={values.priority}
          onChange={(e) => set('priority', e.target.value)}
          error={errors.priority}
          hint="Lower numbers are tried first; later ones are fallbacks."
        />
        <TextField
          label="Weight"
          type="number"
          inputMode="numeric"
          min={0}
          max={1000}
          step={1}
          value={values.weight}
          onChange={(e) => set('weight', e.target.value)}
          error={errors.weight}
          hint="Share of this priority's traffic; 0 = standby, used only when the others fail."
        />
        <div className="field">
          <span className="field-label" aria-hidden="true">
            Status
          </span>
          <label className="checkbox">
            <input type="checkbox" checked={values.enabled} onChange={(e) => set('enabled', e.target.checked)} />
            <span>Enabled</span>
          </label>
          <p className="field-hint">Disabled providers are skipped.</p>
        </div>
      </div>

      <div className="form-grid">
        <TextField
          label="Requests per minute"
          type="number"
          inputMode="numeric"
          min={1}
          step={1}
          value={values.quotaRpm}
          onChange={(e) => set('quotaRpm', e.target.value)}
          error={errors['quota.rpm']}
          placeholder="No quota"
          hint="The deployment's own quota, if it has one (e.g. an Azure deployment)."
        />
        <TextField
          label="Tokens per minute"
          type="number"
          inputMode="numeric"
          min={1}
          step={1}
          value={values.quotaTpm}
          onChange={(e) => set('quotaTpm', e.target.value)}
          error={errors['quota.tpm']}
          placeholder="No quota"
          hint="Leave both empty when the provider sets no fixed quota."
        />
      </div>

      <TextField
        label="Models"
        value={values.models}
        onChange={(e) => set('models', e.target.value)}
        error={errors.models}
        placeholder="gpt-4o-mini, gpt-4o"
        hint="Comma separated. Leave empty to route every model to this provider."
      />

      <ModelMapEditor
        rows={values.modelMap}
        onChange={(rows) => set('modelMap', rows)}
        errors={errors}
        generalError={errors.model_map}
      />

      {!needsBaseUrl && (
        <div className="advanced">
          <button
            type="button"
            className="link-button"
            aria-expanded={advanced}
            onClick={() => setAdvanced((a) => !a)}
          >
            {advanced ? 'Hide advanced settings' : 'Show advanced settings'}
          </button>
          {advanced && <div className="advanced-body">{baseUrlField}</div>}
        </div>
      )}

      <div className="form-actions">
        <Button onClick={onCancel} disabled={busy}>
          Cancel
        </Button>
        <Button type="submit" variant="primary" busy={busy}>
          {mode === 'create' ? 'Add provider' : 'Save changes'}
        </Button>
      </div>
    </form>
  );
}
