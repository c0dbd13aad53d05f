import { render, screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { App } from '@/app';
import { api, describeError } from '@/lib/api';
import { loadToken, saveToken, saveWorkspaceId } from '@/lib/session';
import { clearToasts, toast } from '@/lib/toast-store';
import type { KeyStatus, Provider, ProviderKey } from '../schema';

function json(status: number, body: unknown) {
  return new Response(status === 204 ? null : JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json' },
  });
}

const USER = { id: 'u1', email: 'ana@example.com', created_at: '2025-01-01T00:00:00Z', email_verified: true };
const AT = '2025-01-01T00:00:00Z';

function status(extra: Partial<KeyStatus> = {}): KeyStatus {
  return {
    requests_24h: 0,
    share: 0,
    breaker: null,
    remaining_requests: null,
    remaining_tokens: null,
    reset_at: null,
    gateways: 0,
    ...extra,
  };
}

function key(id: string, label: string, extra: Partial<ProviderKey> = {}): ProviderKey {
  return { id, label, weight: 1, enabled: true, key_last4: id.padStart(4, '0'), created_at: AT, updated_at: AT, ...extra };
}

function provider(keys: ProviderKey[]): Provider {
  return {
    id: 'p1',
    kind: 'anthropic',
    name: 'Claude',
    base_url: null,
    key_last4: keys[0]?.key_last4 ?? '',
    has_key: keys.length > 0,
    keys: keys.map(({ status: _, ...k }) => k),
    quota: { rpm: 600, tpm: null },
    priority: 10,
    weight: 1,
    enabled: true,
    models: [],
    model_map: {},
    created_at: AT,
    updated_at: AT,
  };
}

describe('the keys of a provider', () => {
  let routes: Record<string, (init?: RequestInit) => Response>;
  let seen: { method: string; path: string; body: unknown }[];
  let keys: ProviderKey[];

  function as(role: string) {
    routes['/auth/me'] = () => json(200, { user: USER, workspaces: [{ id: 'w1', name: 'Acme', role, created_at: AT }] });
  }

  beforeEach(() => {
    seen = [];
    keys = [
      key('k1', 'default', {
        status: status({ requests_24h: 3, share: 0.75, breaker: 'closed', remaining_requests: 1200, remaining_tokens: 45000, gateways: 2 }),
      }),
      key('k2', 'backup', { weight: 0, status: status({ requests_24h: 1, share: 0.25, breaker: 'open', gateways: 1 }) }),
    ];
    routes = {
      '/workspaces/w1/providers': () => json(200, { data: [provider(keys)] }),
      '/workspaces/w1/providers/p1/keys': () => json(200, { data: keys }),
    };
    saveToken('token');
    saveWorkspaceId('w1');
    window.location.hash = '#/providers/p1';
    api.configure({
      getToken: loadToken,
      onError: (e) => toast.error(describeError(e)),
      fetch: (async (input: RequestInfo | URL, init?: RequestInit) => {
        const path = String(input).split('?')[0];
        const method = init?.method ?? 'GET';
        seen.push({ method, path, body: init?.body ? JSON.parse(String(init.body)) : undefined });
        const handler = routes[`${method} ${path}`] ?? (method === 'GET' ? routes[path] : undefined);
        return handler ? handler(init) : json(404, { error: { code: 'not_found', message: 'not found' } });
      }) as typeof fetch,
    });
  });

  afterEach(() => {
    clearToasts();
    api.configure({ fetch: undefined });
    window.location.hash = '';
  });

  it('shows each key with its share of traffic, breaker and headroom to a member, without changes', async () => {
    as('member');
    render(<App />);
    const table = await screen.findByRole('table', { name: 'Keys of Claude' });
    const rows = within(table).getAllByRole('row');
    expect(rows[1].textContent).toContain('default');
    expect(rows[1].textContent).toContain('75 %');
    expect(rows[1].textContent).toContain('3 requests');
    expect(rows[1].textContent).toContain('Serving');
    expect(rows[1].textContent).toContain('1,200 requests · 45,000 tokens');
    expect(rows[2].textContent).toContain('standby');
    expect(rows[2].textContent).toContain('25 %');
    expect(rows[2].textContent).toContain('Passed over');
    // A member reads the entry; the form and the key actions are for admins.
    expect(screen.getByRole('heading', { name: 'Claude', level: 1 })).toBeTruthy();
    expect(screen.getByText('600 requests per minute')).toBeTruthy();
    expect(screen.queryByRole('button', { name: 'Save changes' })).toBeNull();
    expect(screen.queryByRole('button', { name: 'Remove backup' })).toBeNull();
    expect(screen.queryByRole('form', { name: 'Add a key' })).toBeNull();
    expect((screen.getByRole('switch', { name: 'Enable backup' }) as HTMLInputElement).disabled).toBe(true);
  });

  it('lets an admin add, switch off, re-weight and remove one key at a time', async () => {
    as('admin');
    routes['POST /workspaces/w1/providers/p1/keys'] = (init) => {
      const body = JSON.parse(String(init?.body));
      const added = key('k3', body.label, { weight: body.weight ?? 1 });
      keys = [...keys, { ...added, status: status() }];
      return json(201, added);
    };
    routes['PATCH /workspaces/w1/providers/p1/keys/k2'] = (init) => {
      const patch = JSON.parse(String(init?.body));
      keys = keys.map((k) => (k.id === 'k2' ? { ...k, ...patch } : k));
      const { status: _, ...updated } = keys[1];
      return json(200, updated);
    };
    routes['DELETE /workspaces/w1/providers/p1/keys/k2'] = () => {
      keys = keys.filter((k) => k.id !== 'k2');
      return json(204, null);
    };
    render(<App />);
    const user = userEvent.setup();
    await screen.findByRole('table', { name: 'Keys of Claude' });

    // Add: the suggested label, a weight; the other keys are not sent.
    const form = screen.getByRole('form', { name: 'Add a key' });
    expect((within(form).getByLabelText('New key label') as HTMLInputElement).value).toBe('key-3');
    await user.type(within(form).getByLabelText('New key'), 'sk-ant-third');
    await user.clear(within(form).getByLabelText('New key weight'));
    await user.type(within(form).getByLabelText('New key weight'), '2');
    await user.click(within(form).getByRole('button', { name: 'Add key' }));
    await screen.findByText('key-3', { selector: '.cell-title' });
    expect(seen.find((r) => r.method === 'POST')?.body).toEqual({ key: 'sk-ant-third', label: 'key-3', weight: 2 });

    // Switch off and re-weight the backup key.
    await user.click(screen.getByRole('switch', { name: 'Enable backup' }));
    await waitFor(() => expect((screen.getByRole('switch', { name: 'Enable backup' }) as HTMLInputElement).checked).toBe(false));
    const weight = screen.getByLabelText('Weight of backup');
    await user.clear(weight);
    await user.type(weight, '5');
    await user.click(screen.getByRole('button', { name: 'Save the weight of backup' }));
    await waitFor(() => expect((screen.getByLabelText('Weight of backup') as HTMLInputElement).value).toBe('5'));
    const patches = seen.filter((r) => r.method === 'PATCH').map((r) => r.body);
    expect(patches).toEqual([{ enabled: false }, { weight: 5 }]);

    // Remove it, after a confirmation.
    await user.click(screen.getByRole('button', { name: 'Remove backup' }));
    await user.click(await screen.findByRole('button', { name: 'Remove key' }));
    await waitFor(() => expect(screen.queryByRole('switch', { name: 'Enable backup' })).toBeNull());
    expect(seen.some((r) => r.method === 'DELETE' && r.path === '/workspaces/w1/providers/p1/keys/k2')).toBe(true);
  });

  it('does not offer to remove the last key of a provider that needs one, and shows a taken label', async () => {
    as('owner');
    keys = [key('k1', 'default', { status: status() })];
    routes['POST /workspaces/w1/providers/p1/keys'] = () =>
      json(409, { error: { code: 'label_taken', message: 'another key of this entry has this label' } });
    render(<App />);
    const user = userEvent.setup();
    const remove = await screen.findByRole('button', { name: 'Remove default' });
    expect((remove as HTMLButtonElement).disabled).toBe(true);
    const form = screen.getByRole('form', { name: 'Add a key' });
    await user.type(within(form).getByLabelText('New key'), 'sk-x');
    await user.clear(within(form).getByLabelText('New key label'));
    await user.type(within(form).getByLabelText('New key label'), 'spare');
    await user.click(within(form).getByRole('button', { name: 'Add key' }));
    expect(await within(form).findByText('Another key of this provider has this label.')).toBeTruthy();
  });
});
