import { Button } from '@/components/ui/button';
import type { ModelMapRow, ProviderFormErrors } from '../schema';

interface ModelMapEditorProps {
  rows: ModelMapRow[];
  onChange: (rows: ModelMapRow[]) => void;
  errors: ProviderFormErrors;
  generalError?: string;
}

/** Rows of "requested model → model sent to this provider". */
export function ModelMapEditor({ rows, onChange, errors, generalError }: ModelMapEditorProps) {
  function update(index: number, patch: Partial<ModelMapRow>) {
    onChange(rows.map((row, i) => (i === index ? { ...row, ...patch } : row)));
  }

  return (
    <fieldset className="fieldset">
      <legend className="field-label">Model map</legend>
      <p className="field-hint">Rename models for this provider: a request for the left model is sent as the right one.</p>
      {rows.length > 0 && (
        <div className="map-rows">
          {rows.map((row, index) => {
            const n = index + 1;
            const error = errors[`model_map.${index}`];
            return (
              <div key={index} className="map-row-wrap">
                <div className="map-row">
                  <input
                    className="input"
                    aria-label={`Requested model ${n}`}
                    placeholder="Requested, e.g. gpt-4o"
                    value={row.requested}
                    aria-invalid={error ? true : undefined}
                    onChange={(e) => update(index, { requested: e.target.value })}
                  />
                  <span className="map-arrow" aria-hidden="true">
                    →
                  </span>
                  <input
                    className="input"
                    aria-label={`Served model ${n}`}
                    placeholder="Sent as, e.g. gpt-4o-2024-08-06"
                    value={row.served}
                    aria-invalid={error ? true : undefined}
                    onChange={(e) => update(index, { served: e.target.value })}
                  />
                  <Button
                    size="sm"
                    variant="ghost"
                    aria-label={`Remove mapping ${n}`}
                    onClick={() => onChange(rows.filter((_, i) => i !== index))}
                  >
                    Remove
                  </Button>
                </div>
                {error && (
                  <p className="field-error" role="alert">
                    {error}
                  </p>
                )}
              </div>
            );
          })}
        </div>
      )}
      {generalError && (
        <p className="field-error" role="alert">
          {generalError}
        </p>
      )}
      <Button size="sm" onClick={() => onChange([...rows, { requested: '', served: '' }])}>
        Add mapping
      </Button>
    </fieldset>
  );
}
