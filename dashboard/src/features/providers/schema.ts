export type ProviderKind = 'openai' | 'anthropic' | 'gemini' | 'openai_compatible';

export interface Provider {
  id: string;
  kind: ProviderKind;
  name: string;
  base_url: string | null;
  /** Empty when the entry has no key. */
  key_last4: string;
  /** False for an OpenAI-compatible server that needs no key. */
  has_key: boolean;
  priority: number;
  /** Share of the priority's traffic; 0 = standby. */
  weight: number;
  enabled: boolean;
  /** Empty means every model. */
  models: string[];
  /** Requested model → model sent to this provider. */
  model_map: Record<string, string>;
  created_at: string;
  updated_at: string;
}

export interface ProviderInput {
  kind?: ProviderKind;
  name?: string;
  api_key?: string;
  base_url?: string | null;
  priority?: number;
  weight?: number;
  enabled?: boolean;
  models?: string[];
  model_map?: Record<string, string>;
}

export interface KindInfo {
  value: ProviderKind;
  label: string;
  /** Endpoint used when no base URL is set; null when a base URL is required. */
  defaultBaseUrl: string | null;
  keyPlaceholder: string;
}

export const PROVIDER_KINDS: KindInfo[] = [
  { value: 'openai', label: 'OpenAI', defaultBaseUrl: 'https://api.openai.com/v1', keyPlaceholder: 'sk-…' },
  { value: 'anthropic', label: 'Anthropic', defaultBaseUrl: 'https://api.anthropic.com/v1', keyPlaceholder: 'sk-ant-…' },
  {
    value: 'gemini',
    label: 'Google Gemini',
    defaultBaseUrl: 'https://generativelanguage.googleapis.com/v1beta',
    keyPlaceholder: 'AIza…',
  },
  { value: 'openai_compatible', label: 'OpenAI-compatible', defaultBaseUrl: null, keyPlaceholder: 'Key for this endpoint' },
];

export function kindInfo(kind: string): KindInfo {
  return PROVIDER_KINDS.find((k) => k.value === kind) ?? { ...PROVIDER_KINDS[3], value: kind as ProviderKind, label: kind };
}

export function requiresBaseUrl(kind: ProviderKind): boolean {
  return kind === 'openai_compatible';
}

export const MAX_PRIORITY = 1_000_000;
export const MAX_WEIGHT = 1000;

export interface ModelMapRow {
  requested: string;
  served: string;
}

export interface ProviderFormValues {
  kind: ProviderKind;
  name: string;
  apiKey: string;
  baseUrl: string;
  priority: string;
  weight: string;
  enabled: boolean;
  models: string;
  modelMap: ModelMapRow[];
}

export type ProviderFormErrors = Partial<Record<string, string>>;

export function emptyProviderValues(priority = 0): ProviderFormValues {
  return {
    kind: 'openai',
    name: '',
    apiKey: '',
    baseUrl: '',
    priority: String(priority),
    weight: '1',
    enabled: true,
    models: '',
    modelMap: [],
  };
}

export function providerToValues(provider: Provider): ProviderFormValues {
  return {
    kind: provider.kind,
    name: provider.name,
    apiKey: '',
    baseUrl: provider.base_url ?? '',
    priority: String(provider.priority),
    weight: String(provider.weight ?? 1),
    enabled: provider.enabled,
    models: provider.models.join(', '),
    modelMap: Object.entries(provider.model_map).map(([requested, served]) => ({ requested, served })),
  };
}

/** "a, b\nc" → ["a","b","c"]: trimmed, without blanks or repeats. */
export function parseModels(text: string): string[] {
  const seen = new Set<string>();
  for (const part of text.split(/[,\n]/)) {
    const model = part.trim();
    if (model) seen.add(model);
  }
  return [...seen];
}

export function validateBaseUrl(value: string): string | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return 'Enter a full URL, e.g. https://example.com/v1.';
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return 'Use an http:// or https:// URL.';
  if (url.username || url.password) return 'Do not put credentials in the URL; use the API key field.';
  if (url.search || url.hash) return 'Remove the query string or fragment.';
  return undefined;
}

/**
 * Checks the form before it is sent. Keys match the API's field names
 * (kind, name, api_key, base_url, priority, models, model_map) so server
 * errors land on the same inputs; map rows use "model_map.<row>".
 */
export function validateProviderForm(
  values: ProviderFormValues,
  mode: 'create' | 'edit',
  original?: Pick<Provider, 'kind' | 'base_url'> & Partial<Pick<Provider, 'has_key'>>,
): ProviderFormErrors {
  const errors: ProviderFormErrors = {};
  if (!PROVIDER_KINDS.some((k) => k.value === values.kind)) errors.kind = 'Choose a provider kind.';
  const name = values.name.trim();
  if (!name) errors.name = 'Enter a name.';
  else if (name.length > 100) errors.name = 'Use at most 100 characters.';
  // Only an OpenAI-compatible server (Ollama, vLLM, llama.cpp) may need no key.
  const keyOptional = values.kind === 'openai_compatible';
  if (mode === 'create' && !values.apiKey.trim() && !keyOptional) errors.api_key = 'Enter the provider API key.';
  // The key is sealed to its kind and base URL: sending it elsewhere needs it again.
  const moved =
    original !== undefined &&
    (values.kind !== original.kind || values.baseUrl.trim() !== (original.base_url ?? ''));
  const keyless = original !== undefined && original.has_key === false;
  if (mode === 'edit' && !values.apiKey.trim()) {
    if (keyless && !keyOptional) errors.api_key = 'Enter the provider API key.';
    else if (moved && !keyless) errors.api_key = 'Changing the kind or base URL needs the API key again.';
  }
  const baseUrl = values.baseUrl.trim();
  if (baseUrl) {
    const problem = validateBaseUrl(baseUrl);
    if (problem) errors.base_url = problem;
  } else if (requiresBaseUrl(values.kind)) {
    errors.base_url = 'An OpenAI-compatible provider needs a base URL.';
  }
  const priority = values.priority.trim();
  if (priority && !/^-?\d+$/.test(priority)) errors.priority = 'Use a whole number.';
  else if (priority && Math.abs(Number(priority)) > MAX_PRIORITY)
    errors.priority = `Use a number between -${MAX_PRIORITY.toLocaleString('en-US')} and ${MAX_PRIORITY.toLocaleString('en-US')}.`;

  const weight = values.weight.trim();
  if (weight && (!/^\d+$/.test(weight) || Number(weight) > MAX_WEIGHT))
    errors.weight = `Use a whole number from 0 (standby) to ${MAX_WEIGHT}.`;

  const seen = new Set<string>();
  values.modelMap.forEach((row, index) => {
    const requested = row.requested.trim();
    const served = row.served.trim();
    if (!requested && !served) return; // blank rows are ignored
    if (!requested) errors[`model_map.${index}`] = 'Enter the requested model.';
    else if (!served) errors[`model_map.${index}`] = 'Enter the model to send instead.';
    else if (seen.has(requested)) errors[`model_map.${index}`] = `“${requested}” is mapped twice.`;
    seen.add(requested);
  });
  return errors;
}

export function modelMapFromRows(rows: ModelMapRow[]): Record<string, string> {
  const map: Record<string, string> = {};
  for (const row of rows) {
    const requested = row.requested.trim();
    const served = row.served.trim();
    if (requested && served) map[requested] = served;
  }
  return map;
}

/** The request body for a valid form. In edit mode an empty key keeps the current one. */
export function valuesToInput(values: ProviderFormValues, mode: 'create' | 'edit', original?: Provider): ProviderInput {
  const input: ProviderInput = {
    kind: values.kind,
    name: values.name.trim(),
    enabled: values.enabled,
    models: parseModels(values.models),
    model_map: modelMapFromRows(values.modelMap),
  };
  const apiKey = values.apiKey.trim();
  if (apiKey) input.api_key = apiKey;
  const baseUrl = values.baseUrl.trim();
  if (baseUrl) input.base_url = baseUrl;
  else if (mode === 'edit' && original?.base_url) input.base_url = null; // clear the override
  const priority = values.priority.trim();
  if (priority) input.priority = Number(priority);
  const weight = values.weight.trim();
  if (weight) input.weight = Number(weight);
  return input;
}

export function sortByPriority(providers: Provider[]): Provider[] {
  return [...providers].sort(
    (a, b) => a.priority - b.priority || a.created_at.localeCompare(b.created_at) || a.name.localeCompare(b.name),
  );
}

export interface PriorityChange {
  id: string;
  priority: number;
}

/**
 * Priority updates that move the provider at `index` one step up or down.
 * With distinct priorities the two neighbours swap (two updates); when any
 * priorities tie, the whole list is renumbered 10, 20, 30… in the new order.
 */
export function planMove(providers: Provider[], index: number, direction: 'up' | 'down'): PriorityChange[] {
  const list = sortByPriority(providers);
  const target = direction === 'up' ? index - 1 : index + 1;
  if (index < 0 || index >= list.length || target < 0 || target >= list.length) return [];
  const a = list[index];
  const b = list[target];
  const distinct = new Set(list.map((p) => p.priority)).size === list.length;
  if (distinct) {
    return [
      { id: a.id, priority: b.priority },
      { id: b.id, priority: a.priority },
    ];
  }
  const reordered = [...list];
  reordered[index] = b;
  reordered[target] = a;
  return reordered
    .map((p, i) => ({ id: p.id, priority: (i + 1) * 10, current: p.priority }))
    .filter((c) => c.priority !== c.current)
    .map(({ id, priority }) => ({ id, priority }));
}

/** Priority for a new provider so that it goes last. */
export function nextPriority(providers: Provider[]): number {
  if (providers.length === 0) return 10;
  return Math.max(...providers.map((p) => p.priority)) + 10;
}
