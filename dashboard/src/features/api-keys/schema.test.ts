import { describe, expect, it } from 'vitest';
import { keyStatus, validateApiKeyForm, valuesToApiKeyInput } from './schema';

describe('api keys', () => {
  const now = Date.parse('2025-03-05T12:00:00Z');

  it('derives the status', () => {
    expect(keyStatus({ revoked_at: null, expires_at: null }, now)).toBe('active');
    expect(keyStatus({ revoked_at: '2025-03-01T00:00:00Z', expires_at: null }, now)).toBe('revoked');
    expect(keyStatus({ revoked_at: null, expires_at: '2025-03-05T11:00:00Z' }, now)).toBe('expired');
    expect(keyStatus({ revoked_at: null, expires_at: '2025-04-01T00:00:00Z' }, now)).toBe('active');
  });

  it('validates the form', () => {
    expect(validateApiKeyForm({ name: '', expiresAt: '' }, now).name).toBeDefined();
    expect(validateApiKeyForm({ name: 'ci', expiresAt: '' }, now)).toEqual({});
    expect(validateApiKeyForm({ name: 'ci', expiresAt: '2020-01-01T00:00' }, now).expires_at).toBe('Choose a time in the future.');
  });

  it('sends expiry as RFC 3339 only when set', () => {
    expect(valuesToApiKeyInput({ name: ' ci ', expiresAt: '' })).toEqual({ name: 'ci' });
    expect(valuesToApiKeyInput({ name: 'ci', expiresAt: '2030-01-01T00:00' }).expires_at).toBe(new Date('2030-01-01T00:00').toISOString());
  });
});
