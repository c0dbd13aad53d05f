import { render, screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { afterEach, describe, expect, it } from 'vitest';
import { api } from '@/lib/api';
import { clearToasts } from '@/lib/toast-store';
import { WorkspaceTracing } from './workspace-tracing';

function json(status: number, body: unknown) {
  return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });
}

const WORKSPACE = { id: 'w1', name: 'Acme', role: 'owner', created_at: '2025-01-01T00:00:00Z' };

describe('workspace tracing', () => {
  afterEach(() => {
    clearToasts();
    api.configure({ fetch: undefined });
  });

  it('shows content capture off and turns it on with PATCH of tracing only', async () => {
    const sent: unknown[] = [];
    api.configure({
      getToken: () => 'token',
      fetch: (async (input: RequestInfo | URL, init?: RequestInit) => {
        const path = String(input).split('?')[0];
        if (!path.endsWith('/workspaces/w1')) return json(404, { error: { code: 'not_found', message: 'not found' } });
        if (init?.method === 'PATCH') {
          const body = JSON.parse(String(init.body));
          sent.push(body);
          return json(200, { ...WORKSPACE, tracing: body.tracing });
        }
        return json(200, { ...WORKSPACE, tracing: { capture_content: false } });
      }) as typeof fetch,
    });
    render(<WorkspaceTracing workspaceId="w1" />);
    const box = (await screen.findByRole('checkbox', { name: /Capture message content/ })) as HTMLInputElement;
    expect(box.checked).toBe(false);
    await userEvent.click(box);
    await userEvent.click(screen.getByRole('button', { name: 'Save tracing' }));
    await waitFor(() => expect(sent).toHaveLength(1));
    expect(sent).toEqual([{ tracing: { capture_content: true } }]);
  });

  it('is read-only for who may not change settings', async () => {
    api.configure({
      getToken: () => 'token',
      fetch: (async () => json(200, { ...WORKSPACE, tracing: { capture_content: true } })) as typeof fetch,
    });
    render(<WorkspaceTracing workspaceId="w1" readOnly />);
    const box = (await screen.findByRole('checkbox', { name: /Capture message content/ })) as HTMLInputElement;
    await waitFor(() => expect(box.checked).toBe(true));
    expect(box.matches(':disabled')).toBe(true);
  });
});
