import { render, screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { afterEach, describe, expect, it } from 'vitest';
import { api } from '@/lib/api';
import { clearToasts } from '@/lib/toast-store';
import { WorkspaceLimits } from './workspace-limits';

function json(status: number, body: unknown) {
  return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });
}

const WORKSPACE = { id: 'w1', name: 'Acme', role: 'owner', created_at: '2025-01-01T00:00:00Z' };

describe('workspace limits', () => {
  afterEach(() => {
    clearToasts();
    api.configure({ fetch: undefined });
  });

  it('shows the current limits and saves new ones with the name', async () => {
    const sent: unknown[] = [];
    api.configure({
      getToken: () => 'token',
      fetch: (async (input: RequestInfo | URL, init?: RequestInit) => {
        const path = String(input).split('?')[0];
        if (!path.endsWith('/workspaces/w1')) return json(404, { error: { code: 'not_found', message: 'not found' } });
        if (init?.method === 'PUT') {
          const body = JSON.parse(String(init.body));
          sent.push(body);
          return json(200, { ...WORKSPACE, limits: body.limits });
        }
        return json(200, { ...WORKSPACE, limits: { rpm: 100, tpm: null, max_concurrency: null, budget_usd: 20, budget_period: 'week' } });
      }) as typeof fetch,
    });
    render(<WorkspaceLimits workspaceId="w1" name="Acme" />);
    await screen.findByDisplayValue('100');
    const rpm = screen.getByLabelText('Workspace requests per minute') as HTMLInputElement;
    expect(rpm.value).toBe('100');
    expect((screen.getByLabelText('Workspace budget (USD)') as HTMLInputElement).value).toBe('20');
    await userEvent.clear(rpm);
    await userEvent.type(rpm, '0');
    await userEvent.click(screen.getByRole('button', { name: 'Save workspace limits' }));
    expect(await screen.findByText(/whole number of at least 1/)).toBeTruthy();
    expect(sent).toHaveLength(0);
    await userEvent.clear(rpm);
    await userEvent.type(rpm, '50');
    await userEvent.click(screen.getByRole('button', { name: 'Save workspace limits' }));
    await screen.findByDisplayValue('50');
    expect(sent).toEqual([{ name: 'Acme', limits: { rpm: 50, tpm: null, max_concurrency: null, budget_usd: 20, budget_period: 'week' } }]);
  });
});
