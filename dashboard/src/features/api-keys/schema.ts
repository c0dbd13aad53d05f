export interface ApiKey {
  id: string;
  name: string;
  prefix: string;
  created_at: string;
  last_used_at: string | null;
  revoked_at: string | null;
  expires_at: string | null;
}

export interface CreatedApiKey extends ApiKey {
  /** The plaintext key, returned only once at creation. */
  key: string;
}

export interface ApiKeyInput {
  name: string;
  expires_at?: string;
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
  return input;
}
