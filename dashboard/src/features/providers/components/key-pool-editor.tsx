import { Button } from '@/components/ui/button';
import { emptyKeyRow, MAX_KEYS, type KeyRow, type ProviderFormErrors } from '../schema';

interface KeyPoolEditorProps {
  rows: KeyRow[];
  onChange: (rows: KeyRow[]) => void;
  errors: ProviderFormErrors;
  /** "Keys" on a new entry, "New keys" when replacing a pool. */
  legend: string;
  /** "API key" on a new entry, "New API key" when replacing a pool. */
  keyLabel: string;
  placeholder: string;
  hint: string;
}

/**
 * The keys of an entry's pool, typed whole: each row a key with an optional label and
 * weight. Errors are read under the API's names (`keys.<row>.key` …; `api_key` and `keys`
 * for the pool as a whole).
 */
export function KeyPoolEditor({ rows, onChange, errors, legend, keyLabel, placeholder, hint }: KeyPoolEditorProps) {
  function update(index: number, patch: Partial<KeyRow>) {
    onChange(rows.map((row, i) => (i === index ? { ...row, ...patch } : row)));
  }
  const several = rows.length > 1;
  const poolError = errors.api_key ?? errors.keys;

  return (
    <fieldset className="fieldset">
      <legend className="field-label">{legend}</legend>
      <p className="field-hint">{hint}</p>
      <div className="map-rows">
        <div className="map-row key-row key-head" aria-hidden="true">
          <span>Key</span>
          <span>Label</span>
          <span>Weight</span>
          {/* Holds the width of the rows' Remove buttons, so the columns line up. */}
          {several && <span className="btn btn-sm btn-ghost key-head-spacer">Remove</span>}
        </div>
        {rows.map((row, index) => {
          const n = index + 1;
          const suffix = n === 1 ? '' : ` ${n}`;
          const rowErrors = [errors[`keys.${index}.key`], errors[`keys.${index}.label`], errors[`keys.${index}.weight`]].filter(
            Boolean,
          );
          return (
            <div key={index} className="map-row-wrap">
              <div className="map-row key-row">
                <input
                  className="input"
                  type="password"
                  autoComplete="off"
                  spellCheck={false}
                  aria-label={`${keyLabel}${suffix}`}
                  placeholder={index === 0 ? placeholder : 'Another key'}
                  value={row.key}
                  aria-invalid={errors[`keys.${index}.key`] || (index === 0 && poolError) ? true : undefined}
                  onChange={(e) => update(index, { key: e.target.value })}
                />
                <input
                  className="input input-narrow"
                  aria-label={`Label of key ${n}`}
                  placeholder={several ? `key-${n}` : 'default'}
                  maxLength={100}
                  value={row.label}
                  aria-invalid={errors[`keys.${index}.label`] ? true : undefined}
                  onChange={(e) => update(index, { label: e.target.value })}
                />
                <input
                  className="input input-narrow"
                  type="number"
                  inputMode="numeric"
                  min={0}
                  max={1000}
                  step={1}
                  aria-label={`Weight of key ${n}`}
                  title="Share of this provider's traffic; 0 = standby"
                  value={row.weight}
                  aria-invalid={errors[`keys.${index}.weight`] ? true : undefined}
                  onChange={(e) => update(index, { weight: e.target.value })}
                />
                {several && (
                  <Button
                    size="sm"
                    variant="ghost"
                    aria-label={`Remove key ${n}`}
                    onClick={() => onChange(rows.filter((_, i) => i !== index))}
                  >
                    Remove
                  </Button>
                )}
              </div>
              {rowErrors.map((message) => (
                <p key={message} className="field-error" role="alert">
                  {message}
                </p>
              ))}
            </div>
          );
        })}
      </div>
      {poolError && (
        <p className="field-error" role="alert">
          {poolError}
        </p>
      )}
      <Button size="sm" disabled={rows.length >= MAX_KEYS} onClick={() => onChange([...rows, emptyKeyRow()])}>
        Add another key
      </Button>
    </fieldset>
  );
}
