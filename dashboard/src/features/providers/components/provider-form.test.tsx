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

  it('in edit mode shows only the last four of the key and keeps it when left blank', async () => {
    const provider: Provider = {
      id: 'p1',
      kind: 'anthropic',
      name: 'Claude',
      base_url: null,
      key_last4: 'wxyz',
      has_key: true,
      weight: 1,
      priority: 20,
      enabled: false,
      models: [],
      model_map: {},
      created_at: '2025-01-01T00:00:00Z',
      updated_at: '2025-01-01T00:00:00Z',
    };
    const { user, onSubmit } = setup({ mode: 'edit', original: provider, initialValues: providerToValues(provider) });
    expect(screen.getByText(/ends in …wxyz/)).toBeTruthy();
    expect(screen.getByLabelText('Replace API key')).toHaveProperty('value', '');
    await user.click(screen.getByRole('button', { name: 'Save changes' }));
    const body = (onSubmit.mock.calls[0] as unknown as [Record<string, unknown>])[0];
    expect(body).not.toHaveProperty('api_key');
    expect(body).toMatchObject({ kind: 'anthropic', name: 'Claude', enabled: false, priority: 20 });
  });
});
