import { useState, type FormEvent } from 'react';
import { ApiError, fieldErrors } from '@/lib/api';
import { formatDateTime } from '@/lib/format';
import { toast } from '@/lib/toast-store';
import { useResource } from '@/lib/use-resource';
import { Badge } from '@/components/ui/badge';
import { Button } from '@/components/ui/button';
import { ConfirmDialog } from '@/components/ui/confirm-dialog';
import { EmptyState, ErrorState, LoadingState } from '@/components/ui/states';
import { addKey, deleteKey, listKeys, updateKey } from '../api';
import {
  breakerView,
  emptyNewKey,
  formatShare,
  headroom,
  MAX_KEYS,
  MAX_WEIGHT,
  validateNewKey,
  type NewKeyValues,
  type Provider,
  type ProviderFormErrors,
  type ProviderKey,
} from '../schema';

interface ProviderKeysProps {
  workspaceId: string;
  provider: Pick<Provider, 'id' | 'name' | 'kind'>;
  /** Whether the viewer may add, change and remove keys (admins). */
  manage: boolean;
  /** Called after a change, so the entry's own view can refresh. */
  onChanged?: () => void;
}

/**
 * An entry's pool of keys: each key's share of the last day's traffic, breaker and
 * headroom as the gateways report them, and (for admins) adding, switching off,
 * re-weighting and removing one key at a time.
 */
export function ProviderKeys({ workspaceId, provider, manage, onChanged }: ProviderKeysProps) {
  const keys = useResource((signal) => listKeys(workspaceId, provider.id, signal), [workspaceId, provider.id]);
  const [pending, setPending] = useState<string | null>(null);
  const [toRemove, setToRemove] = useState<ProviderKey | null>(null);
  const [weights, setWeights] = useState<Record<string, string>>({});
  const list = keys.data ?? [];
  const mayLoseLast = provider.kind === 'openai_compatible';

  async function change(key: ProviderKey, patch: { enabled?: boolean; weight?: number }, done: string) {
    setPending(key.id);
    try {
      const updated = await updateKey(workspaceId, provider.id, key.id, patch);
      keys.setData((current) => (current ?? []).map((k) => (k.id === updated.id ? { ...updated, status: k.status } : k)));
      setWeights(({ [key.id]: _, ...rest }) => rest);
      toast.success(done);
      onChanged?.();
    } catch {
      // Reported by the API client.
    } finally {
      setPending(null);
    }
  }

  function saveWeight(key: ProviderKey) {
    const text = (weights[key.id] ?? String(key.weight)).trim();
    if (!/^\d+$/.test(text) || Number(text) > MAX_WEIGHT) {
      toast.error(`Use a whole number from 0 (standby) to ${MAX_WEIGHT}.`);
      return;
    }
    void change(key, { weight: Number(text) }, `${key.label} now weighs ${text}.`);
  }

  async function remove(key: ProviderKey) {
    await deleteKey(workspaceId, provider.id, key.id);
    keys.setData((current) => (current ?? []).filter((k) => k.id !== key.id));
    toast.success(`${key.label} removed.`);
    onChanged?.();
  }

  return (
    <section className="stack" aria-labelledby="provider-keys-title">
      <div className="section-head">
        <h2 id="provider-keys-title" className="section-title">
          Keys
        </h2>
        <Button size="sm" variant="ghost" onClick={keys.reload} disabled={keys.fetching}>
          Refresh
        </Button>
      </div>
      <p className="muted small">
        Share of traffic counts the last 24 hours of requests. Breaker and headroom are what the gateways that used a key
        reported in the last 30 seconds.
      </p>
      {keys.loading ? (
        <LoadingState label="Loading keys…" />
      ) : keys.error && !keys.data ? (
        <ErrorState error={keys.error} onRetry={keys.reload} title="Could not load the keys" />
      ) : list.length === 0 ? (
        <EmptyState title="No keys">This provider sends no key.</EmptyState>
      ) : (
        <div className="table-wrap">
          <table className="table">
            <caption className="sr-only">Keys of {provider.name}</caption>
            <thead>
              <tr>
                <th scope="col">Label</th>
                <th scope="col">Key</th>
                <th scope="col">Weight</th>
                <th scope="col">Share of traffic</th>
                <th scope="col">Breaker</th>
                <th scope="col">Headroom</th>
                <th scope="col">Enabled</th>
                <th scope="col">
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {list.map((key) => {
                const busy = pending !== null || !manage;
                const breaker = breakerView(key.status);
                const weight = weights[key.id] ?? String(key.weight);
                const last = list.length === 1 && !mayLoseLast;
                return (
                  <tr key={key.id} className={key.enabled ? undefined : 'row-muted'}>
                    <td>
                      <div className="cell-title">{key.label}</div>
                      {key.weight === 0 && <Badge tone="neutral">standby</Badge>}
                    </td>
                    <td className="cell-mono">…{key.key_last4}</td>
                    <td>
                      {manage ? (
                        <div className="order-cell">
                          <input
                            className="input inline-number"
                            type="number"
                            inputMode="numeric"
                            min={0}
                            max={MAX_WEIGHT}
                            step={1}
                            aria-label={`Weight of ${key.label}`}
                            value={weight}
                            disabled={busy}
                            onChange={(e) => setWeights((w) => ({ ...w, [key.id]: e.target.value }))}
                          />
                          {weight !== String(key.weight) && (
                            <Button size="sm" disabled={busy} onClick={() => saveWeight(key)} aria-label={`Save the weight of ${key.label}`}>
                              Save
                            </Button>
                          )}
                        </div>
                      ) : (
                        key.weight
                      )}
                    </td>
                    <td>
                      {key.status ? (
                        <>
                          {formatShare(key.status.share)}
                          <div className="muted small">
                            {key.status.requests_24h.toLocaleString('en-US')} {key.status.requests_24h === 1 ? 'request' : 'requests'}
                          </div>
                        </>
                      ) : (
                        '—'
                      )}
                    </td>
                    <td>
                      <Badge
                        tone={breaker.tone}
                        title={key.status?.gateways ? `${key.status.gateways} gateway(s) reporting` : 'No gateway used this key in the last 30 seconds'}
                      >
                        {breaker.label}
                      </Badge>
                    </td>
                    <td>
                      {headroom(key.status)}
                      {key.status?.reset_at && <div className="muted small">resets {formatDateTime(key.status.reset_at)}</div>}
                    </td>
                    <td>
                      <label className="switch">
                        <input
                          type="checkbox"
                          role="switch"
                          checked={key.enabled}
                          disabled={busy}
                          aria-label={`Enable ${key.label}`}
                          onChange={() =>
                            change(key, { enabled: !key.enabled }, `${key.label} ${key.enabled ? 'disabled' : 'enabled'}.`)
                          }
                        />
                        <span className="switch-track" aria-hidden="true" />
                      </label>
                    </td>
                    <td className="cell-actions">
                      {manage && (
                        <Button
                          size="sm"
                          variant="ghost"
                          className="text-danger"
                          aria-label={`Remove ${key.label}`}
                          disabled={busy || last}
                          title={last ? `A ${provider.kind} provider keeps at least one key.` : undefined}
                          onClick={() => setToRemove(key)}
                        >
                          Remove
                        </Button>
                      )}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
      {manage && keys.data && (
        <AddKeyForm
          keys={list}
          onAdd={async (values) => {
            const added = await addKey(workspaceId, provider.id, {
              key: values.key.trim(),
              label: values.label.trim(),
              weight: values.weight.trim() ? Number(values.weight.trim()) : undefined,
            });
            toast.success(`${added.label} added.`);
            keys.reload();
            onChanged?.();
          }}
        />
      )}
      <ConfirmDialog
        open={toRemove !== null}
        title="Remove key?"
        description={
          toRemove
            ? `“${toRemove.label}” (…${toRemove.key_last4}) will be removed from ${provider.name}; its other keys keep serving. This cannot be undone.`
            : ''
        }
        confirmLabel="Remove key"
        onConfirm={() => (toRemove ? remove(toRemove) : undefined)}
        onClose={() => setToRemove(null)}
      />
    </section>
  );
}

/** Adds one key to the pool, the others left as they are. */
function AddKeyForm({ keys, onAdd }: { keys: ProviderKey[]; onAdd: (values: NewKeyValues) => Promise<void> }) {
  const [values, setValues] = useState<NewKeyValues>(() => emptyNewKey(keys));
  const [errors, setErrors] = useState<ProviderFormErrors>({});
  const [busy, setBusy] = useState(false);
  const full = keys.length >= MAX_KEYS;

  function set<K extends keyof NewKeyValues>(name: K, value: NewKeyValues[K]) {
    setValues((v) => ({ ...v, [name]: value }));
  }

  async function submit(event: FormEvent) {
    event.preventDefault();
    const found = validateNewKey(values, keys);
    setErrors(found);
    if (Object.keys(found).length > 0) return;
    setBusy(true);
    try {
      await onAdd(values);
      setValues(emptyNewKey([...keys, { label: values.label.trim() } as ProviderKey]));
      setErrors({});
    } catch (error) {
      const server: ProviderFormErrors = fieldErrors(error);
      if (error instanceof ApiError && error.code === 'label_taken') server.label = 'Another key of this provider has this label.';
      setErrors(server);
    } finally {
      setBusy(false);
    }
  }

  const messages = [errors.key, errors.label, errors.weight].filter(Boolean);
  return (
    <form className="fieldset" onSubmit={submit} noValidate aria-label="Add a key">
      <span className="field-label">Add a key</span>
      <div className="key-add">
        <input
          className="input"
          type="password"
          autoComplete="off"
          spellCheck={false}
          aria-label="New key"
          placeholder={full ? `At most ${MAX_KEYS} keys` : 'The provider API key'}
          value={values.key}
          disabled={full}
          aria-invalid={errors.key ? true : undefined}
          onChange={(e) => set('key', e.target.value)}
        />
        <input
          className="input input-narrow"
          aria-label="New key label"
          maxLength={100}
          value={values.label}
          disabled={full}
          aria-invalid={errors.label ? true : undefined}
          onChange={(e) => set('label', e.target.value)}
        />
        <input
          className="input input-narrow"
          type="number"
          inputMode="numeric"
          min={0}
          max={MAX_WEIGHT}
          step={1}
          aria-label="New key weight"
          value={values.weight}
          disabled={full}
          aria-invalid={errors.weight ? true : undefined}
          onChange={(e) => set('weight', e.target.value)}
        />
        <Button type="submit" variant="primary" size="sm" busy={busy} disabled={full}>
          Add key
        </Button>
      </div>
      {messages.map((message) => (
        <p key={message} className="field-error" role="alert">
          {message}
        </p>
      ))}
      <p className="field-hint">Weight 0 makes a standby key, used only when the provider's other keys are out.</p>
    </form>
  );
}
