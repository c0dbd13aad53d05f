import { render, screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { afterEach, describe, expect, it } from 'vitest';
import { api } from '@/lib/api';
import { clearToasts } from '@/lib/toast-store';
import { WorkspaceCache } from './workspace-cache';

function json(status: number, body: unknown) {
  return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });
}

const WORKSPACE = { id: 'w1', name: 'Acme', role: 'owner', created_at: '2025-01-01T00:00:00Z' };

/** A server holding one workspace's cache settings; records what it is sent. */
function server(sent: { method: string; path: string; body?: unknown }[]) {
  let cache = { mode: 'off', ttl_seconds: 3600 };
  return (async (input: RequestInfo | URL, init?: RequestInit) => {
    const path = String(input).split('?')[0];
    const method = init?.method ?? 'GET';
    if (path.endsWith('/workspaces/w1/cache') && method === 'DELETE') {
      sent.push({ method, path: '/workspaces/w1/cache' });
      return new Response(null, { status: 204 });
    }
    if (!path.endsWith('/workspaces/w1')) return json(404, { error: { code: 'not_found', message: 'not found' } });
    if (method === 'PATCH') {
      const body = JSON.parse(String(init?.body));
      sent.push({ method, path: '/workspaces/w1', body });
      if (body.cache.ttl_seconds > 2_592_000) {
        return json(400, { error: { code: 'validation_failed', message: 'bad', fields: { 'cache.ttl_seconds': 'must be an integer from 1 to 2592000' } } });
      }
      cache = { ...cache, ...body.cache };
    }
    return json(200, { ...WORKSPACE, cache });
  }) as typeof fetch;
}

describe('workspace cache', () => {
  afterEach(() => {
    clearToasts();
    api.configure({ fetch: undefined });
  });

  it('shows the settings and changes only the cache with PATCH', async () => {
    const sent: { method: string; path: string; body?: unknown }[] = [];
    api.configure({ getToken: () => 'token', fetch: server(sent) });
    render(<WorkspaceCache workspaceId="w1" />);
    const mode = (await screen.findByLabelText('Mode')) as HTMLSelectElement;
    expect(mode.value).toBe('off');
    const ttl = screen.getByLabelText('Time to live (seconds)') as HTMLInputElement;
    expect(ttl.value).toBe('3600');
    await userEvent.selectOptions(mode, 'opt_in');
    await userEvent.clear(ttl);
    await userEvent.type(ttl, '600');
    await userEvent.click(screen.getByRole('button', { name: 'Save cache' }));
    await waitFor(() => expect(sent).toHaveLength(1));
    expect(sent).toEqual([{ method: 'PATCH', path: '/workspaces/w1', body: { cache: { mode: 'opt_in', ttl_seconds: 600 } } }]);
    expect(screen.queryByRole('button', { name: 'Purge cache' })).toBeNull();
  });

  it('refuses a TTL out of range before sending it', async () => {
    const sent: { method: string; path: string; body?: unknown }[] = [];
    api.configure({ getToken: () => 'token', fetch: server(sent) });
    render(<WorkspaceCache workspaceId="w1" />);
    const ttl = (await screen.findByLabelText('Time to live (seconds)')) as HTMLInputElement;
    for (const bad of ['0', '2592001', '1.5', 'soon']) {
      await userEvent.clear(ttl);
      await userEvent.type(ttl, bad);
      await userEvent.click(screen.getByRole('button', { name: 'Save cache' }));
      expect((await screen.findByRole('alert')).textContent).toMatch(/seconds/);
    }
    expect(sent).toEqual([]);
  });

  it('purges after a confirmation', async () => {
    const sent: { method: string; path: string; body?: unknown }[] = [];
    api.configure({ getToken: () => 'token', fetch: server(sent) });
    render(<WorkspaceCache workspaceId="w1" canPurge />);
    await userEvent.click(await screen.findByRole('button', { name: 'Purge cache' }));
    const dialog = await screen.findByRole('dialog');
    expect(dialog.textContent).toContain('Purge the cache?');
    expect(sent).toEqual([]);
    const confirm = screen.getAllByRole('button', { name: 'Purge cache' }).find((b) => dialog.contains(b));
    await userEvent.click(confirm!);
    await waitFor(() => expect(sent).toEqual([{ method: 'DELETE', path: '/workspaces/w1/cache' }]));
  });
});
