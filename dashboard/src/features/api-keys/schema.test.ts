import { describe, expect, it } from 'vitest';
import { hasLimits, keyStatus, limitsFormFrom, limitsFormToInput, usedShare, validateApiKeyForm, validateLimitsForm, valuesToApiKeyInput } from './schema';

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

  it('sends a cache mode only when the key has its own', () => {
    expect(valuesToApiKeyInput({ name: 'ci', expiresAt: '', cacheMode: 'inherit' })).toEqual({ name: 'ci' });
    expect(valuesToApiKeyInput({ name: 'ci', expiresAt: '', cacheMode: 'opt_in' })).toEqual({ name: 'ci', cache_mode: 'opt_in' });
  });
});

describe('key limits', () => {
  const empty = limitsFormFrom({});

  it('starts empty with a monthly budget period', () => {
    expect(empty).toEqual({ rpm: '', tpm: '', maxConcurrency: '', budgetUsd: '', budgetPeriod: 'month', allowedModels: '', label: '', ownerEmail: '', cacheMode: 'inherit' });
    expect(validateLimitsForm(empty)).toEqual({});
  });

  it('round-trips a key into the form and back', () => {
    const form = limitsFormFrom({
      limits: { rpm: 2, tpm: null, max_concurrency: 1, budget_usd: 1.5, budget_period: 'day' },
      allowed_models: ['gpt-4o-mini', 'claude-*'],
      label: 'batch',
      owner_email: 'ops@example.com',
      cache_mode: 'off',
    });
    expect(form.rpm).toBe('2');
    expect(form.allowedModels).toBe('gpt-4o-mini, claude-*');
    expect(limitsFormToInput(form, '2999-01-01T00:00:00Z')).toEqual({
      expires_at: '2999-01-01T00:00:00Z',
      limits: { rpm: 2, tpm: null, max_concurrency: 1, budget_usd: 1.5, budget_period: 'day' },
      allowed_models: ['gpt-4o-mini', 'claude-*'],
      label: 'batch',
      owner_email: 'ops@example.com',
      cache_mode: 'off',
    });
  });

  it('refuses bad numbers, patterns and emails', () => {
    const errors = validateLimitsForm({ ...empty, rpm: '0', tpm: '1.5', budgetUsd: '-3', allowedModels: 'gpt-*-mini', ownerEmail: 'nope' });
    expect(Object.keys(errors).sort()).toEqual(['allowed_models', 'budget_usd', 'owner_email', 'rpm', 'tpm']);
    expect(validateLimitsForm({ ...empty, allowedModels: 'gpt-4o*\nclaude-3' })).toEqual({});
  });

  it('measures use against a limit', () => {
    expect(usedShare(1, 4)).toBe(0.25);
    expect(usedShare(9, 4)).toBe(1);
    expect(usedShare(1, null)).toBeNull();
    expect(hasLimits({ rpm: null, tpm: null, max_concurrency: null, budget_usd: null, budget_period: 'month' })).toBe(false);
    expect(hasLimits({ rpm: 5, tpm: null, max_concurrency: null, budget_usd: null, budget_period: 'month' })).toBe(true);
  });
});
