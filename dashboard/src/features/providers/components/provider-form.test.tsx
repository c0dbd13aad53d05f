import { render, screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it, vi } from 'vitest';
import { ApiError } from '@/lib/api';
import { emptyProviderValues, providerToValues, type Provider } from '../schema';
import { ProviderForm } from './provider-form';

function setup(props: Partial<Parameters<typeof ProviderForm>[0]> = {}) {
  const onSubmit = vi.fn(async () => undefined);
  const onCancel = vi.fn();
  render(<ProviderForm mode="create" initialValues={emptyProviderValues(10)} onSubmit={onSubmit} onCancel={onCancel} {...props} />);
  return { onSubmit, onCancel, user: userEvent.setup() };
}

describe('ProviderForm', () => {
  it('shows the base URL only for openai_compatible, and as an advanced override otherwise', async () => {
    const { user } = setup();
    expect(screen.queryByLabelText('Base URL')).toBeNull();
    expect(screen.queryByLabelText('Base URL override')).toBeNull();

    await user.click(screen.getByRole('button', { name: 'Show advanced settings' }));
    expect(screen.getByLabelText('Base URL override')).toHaveProperty('placeholder', 'https://api.openai.com/v1');

    await user.selectOptions(screen.getByLabelText('Kind'), 'openai_compatible');
    expect(screen.getByLabelText('Base URL')).toBeTruthy();
    expect(screen.queryByRole('button', { name: /advanced settings/ })).toBeNull();

    await user.selectOptions(screen.getByLabelText('Kind'), 'anthropic');
    expect(screen.queryByLabelText('Base URL')).toBeNull();
  });

  it('validates before sending and shows messages next to the inputs', async () => {
    const { user, onSubmit } = setup();
    await user.selectOptions(screen.getByLabelText('Kind'), 'openai_compatible');
    await user.click(screen.getByRole('button', { name: 'Add provider' }));
    expect(onSubmit).not.toHaveBeenCalled();
    expect(screen.getByText('Enter a name.')).toBeTruthy();
    // An OpenAI-compatible server may need no key.
    expect(screen.queryByText('Enter the provider API key.')).toBeNull();
    expect(screen.getByText('An OpenAI-compatible provider needs a base URL.')).toBeTruthy();
    const baseUrl = screen.getByLabelText('Base URL');
    expect(baseUrl.getAttribute('aria-invalid')).toBe('true');
    expect(baseUrl.getAttribute('aria-describedby')).toContain('error');
  });

  it('sends a complete body with models and model map', async () => {
    const { user, onSubmit } = setup();
    await user.selectOptions(screen.getByLabelText('Kind'), 'openai_compatible');
    await user.type(screen.getByLabelText('Name'), 'Local');
    await user.type(screen.getByLabelText('Base URL'), 'http://127.0.0.1:9000/v1');
    await user.type(screen.getByLabelText('API key'), 'sk-test');
    await user.type(screen.getByLabelText('Models'), 'gpt-4o-mini, gpt-4o');
    await user.click(screen.getByRole('button', { name: 'Add mapping' }));
    await user.type(screen.getByLabelText('Requested model 1'), 'gpt-4o');
    await user.type(screen.getByLabelText('Served model 1'), 'local-large');
    await user.click(screen.getByRole('button', { name: 'Add provider' }));
    expect(onSubmit).toHaveBeenCalledWith({
      kind: 'openai_compatible',
      name: 'Local',
      api_key: 'sk-test',
      base_url: 'http://127.0.0.1:9000/v1',
      priority: 10,
      weight: 1,
      enabled: true,
      models: ['gpt-4o-mini', 'gpt-4o'],
      model_map: { 'gpt-4o': 'local-large' },
    });
  });

  it('shows the API field errors next to the inputs, opening the advanced section if needed', async () => {
    const onSubmit = vi.fn(async () => {
      throw new ApiError(400, 'validation_error', 'base_url: must use https', { base_url: 'must use https', name: 'already taken' });
    });
    const { user } = setup({ onSubmit });
    await user.type(screen.getByLabelText('Name'), 'Main');
    await user.type(screen.getByLabelText('API key'), 'sk-1');
    await user.click(screen.getByRole('button', { name: 'Add provider' }));
    expect(await screen.findByText('Must use https')).toBeTruthy();
    expect(screen.getByText('Already taken')).toBeTruthy();
    expect(screen.getByLabelText('Base URL override')).toBeTruthy();
  });

  it('in edit mode shows the pool by label and last four, and keeps it unless replaced', async () => {
    const provider: Provider = {
      id: 'p1',
      kind: 'anthropic',
      name: 'Claude',
      base_url: null,
      key_last4: 'wxyz',
      has_key: true,
      keys: [
        { id: 'k1', label: 'default', weight: 1, enabled: true, key_last4: 'wxyz', created_at: '2025-01-01T00:00:00Z', updated_at: '2025-01-01T00:00:00Z' },
        { id: 'k2', label: 'backup', weight: 0, enabled: false, key_last4: '9876', created_at: '2025-01-01T00:00:00Z', updated_at: '2025-01-01T00:00:00Z' },
      ],
      quota: { rpm: 600, tpm: null },
      weight: 1,
      priority: 20,
      enabled: false,
      models: [],
      model_map: {},
      created_at: '2025-01-01T00:00:00Z',
      updated_at: '2025-01-01T00:00:00Z',
    };
    const { user, onSubmit } = setup({ mode: 'edit', original: provider, initialValues: providerToValues(provider) });
    expect(screen.getByText(/2 keys: default \(…wxyz\), backup \(…9876\)/)).toBeTruthy();
    expect(screen.queryByLabelText('New API key')).toBeNull();
    expect(screen.getByLabelText('Requests per minute')).toHaveProperty('value', '600');
    await user.clear(screen.getByLabelText('Requests per minute'));
    await user.type(screen.getByLabelText('Tokens per minute'), '90000');
    await user.click(screen.getByRole('button', { name: 'Save changes' }));
    const body = (onSubmit.mock.calls[0] as unknown as [Record<string, unknown>])[0];
    expect(body).not.toHaveProperty('api_key');
    expect(body).not.toHaveProperty('keys');
    expect(body).toMatchObject({ kind: 'anthropic', name: 'Claude', enabled: false, priority: 20, quota: { rpm: null, tpm: 90000 } });
  });

  it('asks for the keys again when the entry moves, and sends them as the whole pool', async () => {
    const provider: Provider = {
      id: 'p2',
      kind: 'openai_compatible',
      name: 'Groq',
      base_url: 'https://api.groq.example/v1',
      key_last4: '1234',
      has_key: true,
      keys: [{ id: 'k1', label: 'default', weight: 1, enabled: true, key_last4: '1234', created_at: '2025-01-01T00:00:00Z', updated_at: '2025-01-01T00:00:00Z' }],
      quota: { rpm: null, tpm: null },
      weight: 1,
      priority: 10,
      enabled: true,
      models: [],
      model_map: {},
      created_at: '2025-01-01T00:00:00Z',
      updated_at: '2025-01-01T00:00:00Z',
    };
    const { user, onSubmit } = setup({ mode: 'edit', original: provider, initialValues: providerToValues(provider) });
    const baseUrl = screen.getByLabelText('Base URL');
    await user.clear(baseUrl);
    await user.type(baseUrl, 'https://other.example/v1');
    await user.click(screen.getByRole('button', { name: 'Save changes' }));
    expect(onSubmit).not.toHaveBeenCalled();
    expect(screen.getByText('Changing the kind or base URL needs the API keys again.')).toBeTruthy();
    await user.type(screen.getByLabelText('New API key'), 'sk-new-1');
    await user.click(screen.getByRole('button', { name: 'Add another key' }));
    await user.type(screen.getByLabelText('New API key 2'), 'sk-new-2');
    await user.clear(screen.getByLabelText('Weight of key 2'));
    await user.type(screen.getByLabelText('Weight of key 2'), '0');
    await user.click(screen.getByRole('button', { name: 'Save changes' }));
    const body = (onSubmit.mock.calls[0] as unknown as [Record<string, unknown>])[0];
    expect(body.base_url).toBe('https://other.example/v1');
    expect(body.keys).toEqual([
      { key: 'sk-new-1', weight: 1 },
      { key: 'sk-new-2', weight: 0 },
    ]);
  });

  it('adds a provider with a pool of labelled, weighted keys and a quota', async () => {
    const { user, onSubmit } = setup();
    await user.type(screen.getByLabelText('Name'), 'Pool');
    await user.type(screen.getByLabelText('API key'), 'sk-one');
    await user.type(screen.getByLabelText('Label of key 1'), 'primary');
    await user.click(screen.getByRole('button', { name: 'Add another key' }));
    await user.type(screen.getByLabelText('API key 2'), 'sk-two');
    await user.clear(screen.getByLabelText('Weight of key 2'));
    await user.type(screen.getByLabelText('Weight of key 2'), '3');
    await user.click(screen.getByRole('button', { name: 'Add another key' }));
    await user.click(screen.getByRole('button', { name: 'Remove key 3' }));
    await user.type(screen.getByLabelText('Requests per minute'), '600');
    await user.click(screen.getByRole('button', { name: 'Add provider' }));
    const body = (onSubmit.mock.calls[0] as unknown as [Record<string, unknown>])[0];
    expect(body.keys).toEqual([
      { key: 'sk-one', label: 'primary', weight: 1 },
      { key: 'sk-two', weight: 3 },
    ]);
    expect(body).not.toHaveProperty('api_key');
    expect(body.quota).toEqual({ rpm: 600, tpm: null });
  });

  it('places the API errors of a pool on its rows', async () => {
    const onSubmit = vi.fn(async () => {
      throw new ApiError(400, 'validation_error', 'keys.1.label: is the label of another key of this entry', {
        'keys.1.label': 'is the label of another key of this entry',
      });
    });
    const { user } = setup({ onSubmit });
    await user.type(screen.getByLabelText('Name'), 'Pool');
    await user.type(screen.getByLabelText('API key'), 'sk-one');
    await user.click(screen.getByRole('button', { name: 'Add another key' }));
    await user.type(screen.getByLabelText('API key 2'), 'sk-two');
    await user.click(screen.getByRole('button', { name: 'Add provider' }));
    expect(await screen.findByText('Is the label of another key of this entry')).toBeTruthy();
    expect(screen.getByLabelText('Label of key 2').getAttribute('aria-invalid')).toBe('true');
  });
});
