import type { Role } from '@/features/members/schema';

export interface ApiKey {
  id: string;
  name: string;
  prefix: string;
  created_at: string;
  last_used_at: string | null;
  revoked_at: string | null;
  expires_at: string | null;
  limits?: Limits;
  /** Exact model names and `prefix*` patterns; empty allows every model. */
  allowed_models?: string[];
  label?: string | null;
  owner_email?: string | null;
  /** The user who created the key. */
  created_by?: string | null;
  created_by_email?: string | null;
  /** The response-cache mode of requests through this key. */
  cache_mode?: KeyCacheMode;
  /** The role that last set each governed setting; a member changes only what a member set. */
  set_by?: { limits: Role | null; allowed_models: Role | null; expires_at: Role | null; cache_mode?: Role | null };
}

/** A key's cache mode: its workspace's (`inherit`), or one of its own. */
export type KeyCacheMode = 'inherit' | 'off' | 'on' | 'opt_in';

export const KEY_CACHE_MODES: { value: KeyCacheMode; label: string }[] = [
  { value: 'inherit', label: "The workspace's setting" },
  { value: 'off', label: 'Off: never cached' },
  { value: 'on', label: 'On: every cacheable request' },
  { value: 'opt_in', label: 'Opt-in: only requests sending Cache-Control: max-age=N' },
];

export type BudgetPeriod = 'day' | 'week' | 'month';

/** Optional limits of a key or workspace; null means no limit. */
export interface Limits {
  rpm: number | null;
  tpm: number | null;
  max_concurrency: number | null;
  budget_usd: number | null;
  budget_period: BudgetPeriod | null;
}

/** `PUT /workspaces/{id}/api-keys/{kid}`: replaces every setting. */
export interface KeySettingsInput {
  expires_at: string | null;
  limits: Limits;
  allowed_models: string[];
  label: string | null;
  owner_email: string | null;
  cache_mode: KeyCacheMode;
}

/** `GET /workspaces/{id}/api-keys/{kid}/limits`. */
export interface KeyLimitsReport {
  limits: Limits;
  workspace_limits: Limits;
  allowed_models: string[];
  expires_at: string | null;
  usage: {
    requests_last_minute: number;
    tokens_last_minute: number;
    spend_usd: number;
    period_start: string;
    period_end: string;
  };
}

export function hasLimits(limits: Limits | undefined): boolean {
  return !!limits && (limits.rpm !== null || limits.tpm !== null || limits.max_concurrency !== null || limits.budget_usd !== null);
}

export interface LimitsFormValues {
  rpm: string;
  tpm: string;
  maxConcurrency: string;
  budgetUsd: string;
  budgetPeriod: BudgetPeriod;
  /** Comma or newline separated. */
  allowedModels: string;
  label: string;
  ownerEmail: string;
  cacheMode: KeyCacheMode;
}

export type LimitsFormErrors = Partial<Record<'rpm' | 'tpm' | 'max_concurrency' | 'budget_usd' | 'allowed_models' | 'owner_email' | 'label', string>>;

const text = (n: number | null | undefined) => (n === null || n === undefined ? '' : String(n));

export function limitsFormFrom(key: Pick<ApiKey, 'limits' | 'allowed_models' | 'label' | 'owner_email' | 'cache_mode'>): LimitsFormValues {
  return {
    rpm: text(key.limits?.rpm),
    tpm: text(key.limits?.tpm),
    maxConcurrency: text(key.limits?.max_concurrency),
    budgetUsd: text(key.limits?.budget_usd),
    budgetPeriod: key.limits?.budget_period ?? 'month',
    allowedModels: (key.allowed_models ?? []).join(', '),
    label: key.label ?? '',
    ownerEmail: key.owner_email ?? '',
    cacheMode: key.cache_mode ?? 'inherit',
  };
}

function splitModels(raw: string): string[] {
  return raw
    .split(/[,\n]/)
    .map((m) => m.trim())
    .filter(Boolean);
}

export function validateLimitsForm(v: LimitsFormValues): LimitsFormErrors {
  const errors: LimitsFormErrors = {};
  const whole = (raw: string, field: keyof LimitsFormErrors) => {
    if (raw.trim() === '') return;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 1 || n > 2147483647) errors[field] = 'Enter a whole number of at least 1, or leave empty for no limit.';
  };
  whole(v.rpm, 'rpm');
  whole(v.tpm, 'tpm');
  whole(v.maxConcurrency, 'max_concurrency');
  if (v.budgetUsd.trim() !== '') {
    const n = Number(v.budgetUsd);
    if (!Number.isFinite(n) || n < 0 || n > 1e6) errors.budget_usd = 'Enter an amount in USD up to 1,000,000, or leave empty for no budget.';
  }
  for (const m of splitModels(v.allowedModels)) {
    if (m.slice(0, -1).includes('*')) errors.allowed_models = 'Use a model name, or a prefix followed by one trailing *.';
  }
  if (v.label.trim().length > 100) errors.label = 'Use at most 100 characters.';
  if (v.ownerEmail.trim() && !/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(v.ownerEmail.trim())) errors.owner_email = 'Enter a valid email address.';
  return errors;
}

export function limitsFormToInput(v: LimitsFormValues, expiresAt: string | null): KeySettingsInput {
  const num = (raw: string) => (raw.trim() === '' ? null : Number(raw));
  return {
    expires_at: expiresAt,
    limits: {
      rpm: num(v.rpm),
      tpm: num(v.tpm),
      max_concurrency: num(v.maxConcurrency),
      budget_usd: num(v.budgetUsd),
      budget_period: v.budgetPeriod,
    },
    allowed_models: splitModels(v.allowedModels),
    label: v.label.trim() || null,
    owner_email: v.ownerEmail.trim() || null,
    cache_mode: v.cacheMode,
  };
}

/** Share of a limit used, between 0 and 1; null without a limit. */
export function usedShare(used: number, limit: number | null): number | null {
  if (limit === null || limit <= 0) return null;
  return Math.min(1, Math.max(0, used / limit));
}

export interface CreatedApiKey extends ApiKey {
  /** The plaintext key, returned only once at creation. */
  key: string;
}

export interface ApiKeyInput {
  name: string;
  expires_at?: string;
  cache_mode?: KeyCacheMode;
}

export type KeyStatus = 'active' | 'revoked' | 'expired';

export function keyStatus(key: Pick<ApiKey, 'revoked_at' | 'expires_at'>, now: number = Date.now()): KeyStatus {
  if (key.revoked_at) return 'revoked';
  if (key.expires_at && new Date(key.expires_at).getTime() <= now) return 'expired';
  return 'active';
}

export interface ApiKeyFormValues {
  name: string;
  /** Value of a datetime-local input; empty for no expiry. */
  expiresAt: string;
  /** Absent: the workspace's (`inherit`). */
  cacheMode?: KeyCacheMode;
}

export function validateApiKeyForm(values: ApiKeyFormValues, now: number = Date.now()): Partial<Record<'name' | 'expires_at', string>> {
  const errors: Partial<Record<'name' | 'expires_at', string>> = {};
  const name = values.name.trim();
  if (!name) errors.name = 'Enter a name, e.g. the app that will use the key.';
  else if (name.length > 100) errors.name = 'Use at most 100 characters.';
  if (values.expiresAt) {
    const time = new Date(values.expiresAt).getTime();
    if (Number.isNaN(time)) errors.expires_at = 'Enter a valid date and time.';
    else if (time <= now) errors.expires_at = 'Choose a time in the future.';
  }
  return errors;
}

export function valuesToApiKeyInput(values: ApiKeyFormValues): ApiKeyInput {
  const input: ApiKeyInput = { name: values.name.trim() };
  if (values.expiresAt) input.expires_at = new Date(values.expiresAt).toISOString();
  if (values.cacheMode && values.cacheMode !== 'inherit') input.cache_mode = values.cacheMode;
  return input;
}
