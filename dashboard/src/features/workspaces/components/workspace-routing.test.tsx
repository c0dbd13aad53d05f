import { render, screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { afterEach, describe, expect, it } from 'vitest';
import { api } from '@/lib/api';
import { clearToasts } from '@/lib/toast-store';
import { WorkspaceRouting } from './workspace-routing';

function json(status: number, body: unknown) {
  return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });
}

const WORKSPACE = { id: 'w1', name: 'Acme', role: 'owner', created_at: '2025-01-01T00:00:00Z' };

describe('workspace routing', () => {
  afterEach(() => {
    clearToasts();
    api.configure({ fetch: undefined });
  });

  it('shows the strategy and changes only the routing with PATCH', async () => {
    const sent: { method?: string; body: unknown }[] = [];
    api.configure({
      getToken: () => 'token',
      fetch: (async (input: RequestInfo | URL, init?: RequestInit) => {
        const path = String(input).split('?')[0];
        if (!path.endsWith('/workspaces/w1')) return json(404, { error: { code: 'not_found', message: 'not found' } });
        if (init?.method === 'PATCH') {
          const body = JSON.parse(String(init.body));
          sent.push({ method: init.method, body });
          return json(200, { ...WORKSPACE, routing: body.routing });
        }
        return json(200, { ...WORKSPACE, routing: { strategy: 'weighted', sticky: false } });
      }) as typeof fetch,
    });
    render(<WorkspaceRouting workspaceId="w1" />);
    const select = (await screen.findByLabelText('Strategy')) as HTMLSelectElement;
    expect(select.value).toBe('weighted');
    await userEvent.selectOptions(select, 'latency');
    await userEvent.click(screen.getByRole('checkbox', { name: /Keep each conversation/ }));
    await userEvent.click(screen.getByRole('button', { name: 'Save routing' }));
    await waitFor(() => expect(sent).toHaveLength(1));
    expect(sent).toEqual([{ method: 'PATCH', body: { routing: { strategy: 'latency', sticky: true } } }]);
  });
});
