import { render, screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { App } from '@/app';
import { api, describeError } from '@/lib/api';
import { loadToken, saveToken, saveWorkspaceId } from '@/lib/session';
import { clearToasts, toast } from '@/lib/toast-store';

function json(status: number, body: unknown) {
  return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });
}

const USER = { id: 'u1', email: 'ana@example.com', created_at: '2025-01-01T00:00:00Z', email_verified: true };
const LIMITS = { rpm: 10, tpm: null, max_concurrency: null, budget_usd: 5, budget_period: 'month' };

function key(id: string, name: string, createdBy: string) {
  return {
    id,
    name,
    prefix: `pp-${id}`,
    created_at: '2025-01-02T00:00:00Z',
    last_used_at: null,
    revoked_at: null,
    expires_at: null,
    limits: LIMITS,
    allowed_models: [],
    label: null,
    owner_email: null,
    created_by: createdBy,
    created_by_email: `${createdBy}@example.com`,
    set_by: { limits: 'admin', allowed_models: 'member', expires_at: 'member' },
  };
}

describe('API keys of a member', () => {
  let routes: Record<string, (init?: RequestInit) => Response>;
  let seen: string[];

  beforeEach(() => {
    routes = {};
    seen = [];
    saveToken('token');
    saveWorkspaceId('w1');
    window.location.hash = '#/api-keys';
    routes['/auth/me'] = () => json(200, { user: USER, workspaces: [{ id: 'w1', name: 'Acme', role: 'member', created_at: '2025-01-01T00:00:00Z' }] });
    routes['/workspaces/w1/api-keys'] = () => json(200, { data: [key('k1', 'mine', 'u1'), key('k2', 'theirs', 'u2')] });
    routes['/workspaces/w1/api-keys/k1/limits'] = () =>
      json(200, {
        limits: LIMITS,
        workspace_limits: {},
        allowed_models: [],
        expires_at: null,
        usage: { requests_last_minute: 3, tokens_last_minute: 0, spend_usd: 1, period_start: '2025-01-01T00:00:00Z', period_end: '2025-02-01T00:00:00Z' },
      });
    api.configure({
      getToken: loadToken,
      onError: (e) => toast.error(describeError(e)),
      fetch: (async (input: RequestInfo | URL, init?: RequestInit) => {
        const path = String(input).split('?')[0];
        seen.push(`${init?.method ?? 'GET'} ${path}`);
        const handler = routes[`${init?.method ?? 'GET'} ${path}`] ?? routes[path];
        return handler ? handler(init) : json(404, { error: { code: 'not_found', message: 'not found' } });
      }) as typeof fetch,
    });
  });

  afterEach(() => {
    clearToasts();
    api.configure({ fetch: undefined });
    window.location.hash = '';
  });

  it("reads the consumption of the member's own keys only", async () => {
    render(<App />);
    expect(await screen.findByText('3 / 10 req/min')).toBeTruthy();
    expect(screen.getByText('10 req/min')).toBeTruthy();
    expect(seen).toContain('GET /workspaces/w1/api-keys/k1/limits');
    expect(seen).not.toContain('GET /workspaces/w1/api-keys/k2/limits');
  });

  it('shows the refusal of a change to limits an admin set', async () => {
    routes['PUT /workspaces/w1/api-keys/k1'] = () =>
      json(403, { error: { code: 'governed_by_admin', message: 'the key’s limits were set by an admin: only an admin or owner can change them' } });
    render(<App />);
    const user = userEvent.setup();
    await user.click(await screen.findByRole('button', { name: 'Limits of mine' }));
    const rpm = screen.getByLabelText('Requests per minute');
    await user.clear(rpm);
    await user.type(rpm, '1000');
    await user.click(screen.getByRole('button', { name: 'Save limits' }));
    expect(await screen.findByText('The key’s limits were set by an admin: only an admin or owner can change them')).toBeTruthy();
    expect(screen.getByRole('dialog', { name: 'Key limits' })).toBeTruthy();
  });

  it("sends the key's cache mode with its other settings", async () => {
    const bodies: unknown[] = [];
    routes['PUT /workspaces/w1/api-keys/k1'] = (init) => {
      const body = JSON.parse(String(init?.body));
      bodies.push(body);
      return json(200, { ...key('k1', 'mine', 'u1'), cache_mode: body.cache_mode });
    };
    render(<App />);
    const user = userEvent.setup();
    await user.click(await screen.findByRole('button', { name: 'Limits of mine' }));
    const mode = screen.getByLabelText('Response cache') as HTMLSelectElement;
    expect(mode.value).toBe('inherit');
    await user.selectOptions(mode, 'on');
    await user.click(screen.getByRole('button', { name: 'Save limits' }));
    await waitFor(() => expect(bodies).toHaveLength(1));
    expect(bodies[0]).toMatchObject({ cache_mode: 'on', limits: { rpm: 10, budget_usd: 5 } });
  });

  it('creates a key with its own cache mode', async () => {
    const bodies: unknown[] = [];
    routes['POST /workspaces/w1/api-keys'] = (init) => {
      const body = JSON.parse(String(init?.body));
      bodies.push(body);
      return json(201, { ...key('k3', body.name, 'u1'), cache_mode: body.cache_mode, key: 'pp-secret' });
    };
    render(<App />);
    const user = userEvent.setup();
    await user.click(await screen.findByRole('button', { name: /Create (API )?key/ }));
    await user.type(screen.getByLabelText('Key name'), 'batch');
    await user.selectOptions(screen.getByLabelText('Response cache'), 'opt_in');
    await user.click(screen.getByRole('button', { name: 'Create key' }));
    expect(await screen.findByText('API key created')).toBeTruthy();
    expect(bodies).toEqual([{ name: 'batch', cache_mode: 'opt_in' }]);
  });
});
