export type ProviderKind = 'openai' | 'anthropic' | 'gemini' | 'openai_compatible';

/** What gateways and logs say of one key (from the keys endpoint). */
export interface KeyStatus {
  /** Requests this key served in the last 24 hours. */
  requests_24h: number;
  /** Its share of the entry's requests over that time, 0 to 1. */
  share: number;
  /** The worst breaker the gateways report; null when no gateway reported the key lately. */
  breaker: 'closed' | 'half_open' | 'open' | null;
  remaining_requests: number | null;
  remaining_tokens: number | null;
  reset_at: string | null;
  /** How many gateways reported the key in the last 30 seconds. */
  gateways: number;
}

/** One key of an entry's pool; the key itself is never returned. */
export interface ProviderKey {
  id: string;
  label: string;
  /** Share of the entry's traffic; 0 = standby. */
  weight: number;
  enabled: boolean;
  key_last4: string;
  created_at: string;
  updated_at: string;
  /** Only from GET …/providers/{pid}/keys. */
  status?: KeyStatus;
}

export interface Quota {
  rpm: number | null;
  tpm: number | null;
}

export interface Provider {
  id: string;
  kind: ProviderKind;
  name: string;
  base_url: string | null;
  /** The first key's last four; empty when the entry has no key. */
  key_last4: string;
  /** False for an OpenAI-compatible server that needs no key. */
  has_key: boolean;
  /** The entry's pool of keys, oldest first. */
  keys: ProviderKey[];
  /** The deployment's own requests and tokens per minute. */
  quota: Quota;
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

/** A key of a pool sent whole. */
export interface KeyInput {
  key: string;
  label?: string;
  weight?: number;
  enabled?: boolean;
}

export interface QuotaInput {
  rpm?: number | null;
  tpm?: number | null;
}

export interface ProviderInput {
  kind?: ProviderKind;
  name?: string;
  /** A pool of one key (labelled `default`). Not with `keys`. */
  api_key?: string;
  /** The whole pool. Not with `api_key`. */
  keys?: KeyInput[];
  quota?: QuotaInput | null;
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
/** Keys one entry holds at most. */
export const MAX_KEYS = 32;
export const MAX_KEY_LABEL = 100;
export const MAX_QUOTA_RPM = 1_000_000_000;
export const MAX_QUOTA_TPM = 1_000_000_000_000;

/** One key row of the form's pool editor. */
export interface KeyRow {
  key: string;
  /** Blank: the server names it (`default` for a single key, `key-<n>` otherwise). */
  label: string;
  weight: string;
  enabled: boolean;
}

export function emptyKeyRow(): KeyRow {
  return { key: '', label: '', weight: '1', enabled: true };
}

export interface ModelMapRow {
  requested: string;
  served: string;
}

export interface ProviderFormValues {
  kind: ProviderKind;
  name: string;
  /** The pool to send; rows without a key are left out (in edit mode: none keeps the pool). */
  keys: KeyRow[];
  /** Requests per minute of the deployment's quota; blank for none. */
  quotaRpm: string;
  /** Tokens per minute of the deployment's quota; blank for none. */
  quotaTpm: string;
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
    keys: [emptyKeyRow()],
    quotaRpm: '',
    quotaTpm: '',
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
    keys: [emptyKeyRow()],
    quotaRpm: provider.quota?.rpm == null ? '' : String(provider.quota.rpm),
    quotaTpm: provider.quota?.tpm == null ? '' : String(provider.quota.tpm),
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

/** A provider key as the API takes it: visible ASCII, no spaces. */
const KEY_TEXT = /^[\x21-\x7e]+$/;

/** The rows of a pool that carry a key. */
export function filledKeys(rows: KeyRow[]): KeyRow[] {
  return rows.filter((row) => row.key.trim() !== '');
}

/**
 * Checks the pool rows: messages under "keys.<row>.<field>" (as the API names them) and,
 * for the pool as a whole, under "keys".
 */
export function validateKeyRows(rows: KeyRow[], errors: ProviderFormErrors): void {
  const labels = new Set<string>();
  rows.forEach((row, index) => {
    const key = row.key.trim();
    const label = row.label.trim();
    const weight = row.weight.trim();
    if (!key) {
      if (label || (weight && weight !== '1') || !row.enabled) errors[`keys.${index}.key`] = 'Enter the key, or remove this row.';
      return;
    }
    if (!KEY_TEXT.test(key)) errors[`keys.${index}.key`] = 'Use the key as issued: visible characters, no spaces.';
    else if (key.length > 4096) errors[`keys.${index}.key`] = 'This key is too long.';
    if (label.length > MAX_KEY_LABEL) errors[`keys.${index}.label`] = `Use at most ${MAX_KEY_LABEL} characters.`;
    else if (label && labels.has(label)) errors[`keys.${index}.label`] = 'Another key has this label.';
    if (label) labels.add(label);
    if (weight && (!/^\d+$/.test(weight) || Number(weight) > MAX_WEIGHT))
      errors[`keys.${index}.weight`] = `Use a whole number from 0 (standby) to ${MAX_WEIGHT}.`;
  });
  if (filledKeys(rows).length > MAX_KEYS) errors.keys = `An entry holds at most ${MAX_KEYS} keys.`;
}

function validateQuota(values: ProviderFormValues, errors: ProviderFormErrors): void {
  const check = (text: string, max: number, field: string, unit: string) => {
    const value = text.trim();
    if (value && (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > max))
      errors[field] = `Use a whole number of ${unit} from 1 to ${max.toLocaleString('en-US')}, or leave it empty.`;
  };
  check(values.quotaRpm, MAX_QUOTA_RPM, 'quota.rpm', 'requests');
  check(values.quotaTpm, MAX_QUOTA_TPM, 'quota.tpm', 'tokens');
}

/**
 * Checks the form before it is sent. Keys match the API's field names
 * (kind, name, api_key, keys.<row>.<field>, base_url, priority, models,
 * model_map, quota.rpm, quota.tpm) so server errors land on the same inputs;
 * map rows use "model_map.<row>".
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
  validateKeyRows(values.keys, errors);
  // Only an OpenAI-compatible server (Ollama, vLLM, llama.cpp) may need no key.
  const keyOptional = values.kind === 'openai_compatible';
  const noKeys = filledKeys(values.keys).length === 0;
  if (mode === 'create' && noKeys && !keyOptional) errors.api_key = 'Enter the provider API key.';
  // The keys are sealed to their entry's kind and base URL: sending them elsewhere needs them again.
  const moved =
    original !== undefined &&
    (values.kind !== original.kind || values.baseUrl.trim() !== (original.base_url ?? ''));
  const keyless = original !== undefined && original.has_key === false;
  if (mode === 'edit' && noKeys) {
    if (keyless && !keyOptional) errors.api_key = 'Enter the provider API key.';
    else if (moved && !keyless) errors.api_key = 'Changing the kind or base URL needs the API keys again.';
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
  validateQuota(values, errors);

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

/**
 * The pool a form sends: nothing when no row has a key (a new entry then has none, an
 * existing one keeps its own); `api_key` for one plain key (the server labels it
 * `default`); `keys` otherwise, each with what was set.
 */
export function keysToInput(rows: KeyRow[]): Pick<ProviderInput, 'api_key' | 'keys'> {
  const filled = filledKeys(rows);
  if (filled.length === 0) return {};
  const plain = (row: KeyRow) => !row.label.trim() && ['', '1'].includes(row.weight.trim()) && row.enabled;
  if (filled.length === 1 && plain(filled[0])) return { api_key: filled[0].key.trim() };
  return {
    keys: filled.map((row) => {
      const key: KeyInput = { key: row.key.trim() };
      if (row.label.trim()) key.label = row.label.trim();
      if (row.weight.trim()) key.weight = Number(row.weight.trim());
      if (!row.enabled) key.enabled = false;
      return key;
    }),
  };
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

/** The request body for a valid form. In edit mode no key keeps the current pool. */
export function valuesToInput(values: ProviderFormValues, mode: 'create' | 'edit', original?: Provider): ProviderInput {
  const input: ProviderInput = {
    kind: values.kind,
    name: values.name.trim(),
    enabled: values.enabled,
    models: parseModels(values.models),
    model_map: modelMapFromRows(values.modelMap),
  };
  Object.assign(input, keysToInput(values.keys));
  const baseUrl = values.baseUrl.trim();
  if (baseUrl) input.base_url = baseUrl;
  else if (mode === 'edit' && original?.base_url) input.base_url = null; // clear the override
  const priority = values.priority.trim();
  if (priority) input.priority = Number(priority);
  const weight = values.weight.trim();
  if (weight) input.weight = Number(weight);
  const rpm = values.quotaRpm.trim();
  const tpm = values.quotaTpm.trim();
  // An edit states the quota whole (empty clears it); a new entry sends one only when set.
  if (mode === 'edit' || rpm || tpm) input.quota = { rpm: rpm ? Number(rpm) : null, tpm: tpm ? Number(tpm) : null };
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

/** A key to add to an entry's pool, as typed. */
export interface NewKeyValues {
  key: string;
  label: string;
  weight: string;
}

export function emptyNewKey(keys: ProviderKey[]): NewKeyValues {
  return { key: '', label: suggestLabel(keys), weight: '1' };
}

/** The first of `key-1`, `key-2`… no key of the pool has. */
export function suggestLabel(keys: Pick<ProviderKey, 'label'>[]): string {
  const taken = new Set(keys.map((k) => k.label));
  for (let n = keys.length + 1; ; n++) {
    if (!taken.has(`key-${n}`)) return `key-${n}`;
  }
}

/** Checks a key to add; messages under the API's names (key, label, weight). */
export function validateNewKey(values: NewKeyValues, keys: Pick<ProviderKey, 'label'>[]): ProviderFormErrors {
  const errors: ProviderFormErrors = {};
  const key = values.key.trim();
  if (!key) errors.key = 'Enter the provider API key.';
  else if (!KEY_TEXT.test(key)) errors.key = 'Use the key as issued: visible characters, no spaces.';
  else if (key.length > 4096) errors.key = 'This key is too long.';
  const label = values.label.trim();
  if (!label) errors.label = 'Enter a label.';
  else if (label.length > MAX_KEY_LABEL) errors.label = `Use at most ${MAX_KEY_LABEL} characters.`;
  else if (keys.some((k) => k.label === label)) errors.label = 'Another key of this provider has this label.';
  const weight = values.weight.trim();
  if (weight && (!/^\d+$/.test(weight) || Number(weight) > MAX_WEIGHT))
    errors.weight = `Use a whole number from 0 (standby) to ${MAX_WEIGHT}.`;
  if (keys.length >= MAX_KEYS) errors.key = `A provider holds at most ${MAX_KEYS} keys; remove one first.`;
  return errors;
}

export const BREAKER_LABEL: Record<NonNullable<KeyStatus['breaker']>, string> = {
  closed: 'Serving',
  half_open: 'Retrying',
  open: 'Passed over',
};

/** How a key's breaker reads, and its badge tone. */
export function breakerView(status: KeyStatus | undefined): { label: string; tone: 'success' | 'warning' | 'danger' | 'neutral' } {
  switch (status?.breaker) {
    case 'closed':
      return { label: BREAKER_LABEL.closed, tone: 'success' };
    case 'half_open':
      return { label: BREAKER_LABEL.half_open, tone: 'warning' };
    case 'open':
      return { label: BREAKER_LABEL.open, tone: 'danger' };
    default:
      return { label: 'No report', tone: 'neutral' };
  }
}

/** "42 %" of an entry's traffic (one decimal below 10 %). */
export function formatShare(share: number): string {
  const percent = share * 100;
  if (percent > 0 && percent < 10) return `${percent.toFixed(1)} %`;
  return `${Math.round(percent)} %`;
}

/** What a key has left in the provider's window, as reported: "1,200 requests · 45,000 tokens". */
export function headroom(status: KeyStatus | undefined): string {
  if (!status) return '—';
  const parts: string[] = [];
  if (status.remaining_requests !== null) parts.push(`${status.remaining_requests.toLocaleString('en-US')} requests`);
  if (status.remaining_tokens !== null) parts.push(`${status.remaining_tokens.toLocaleString('en-US')} tokens`);
  return parts.length > 0 ? parts.join(' · ') : '—';
}

/** "600 requests · 1,000,000 tokens per minute", or "None". */
export function quotaText(quota: Quota | undefined): string {
  const parts: string[] = [];
  if (quota?.rpm != null) parts.push(`${quota.rpm.toLocaleString('en-US')} requests`);
  if (quota?.tpm != null) parts.push(`${quota.tpm.toLocaleString('en-US')} tokens`);
  return parts.length > 0 ? `${parts.join(' · ')} per minute` : 'None';
}
