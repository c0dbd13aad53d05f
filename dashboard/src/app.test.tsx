import { render, screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { App } from '@/app';
import { api, describeError } from '@/lib/api';
import { loadRefreshToken, loadToken, saveToken, saveTokens } from '@/lib/session';
import { clearToasts, toast } from '@/lib/toast-store';

function json(status: number, body: unknown) {
  return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json' } });
}

const WORKSPACE = { id: 'w1', name: 'Acme', role: 'owner', created_at: '2025-01-01T00:00:00Z' };
const USER = { id: 'u1', email: 'ana@example.com', created_at: '2025-01-01T00:00:00Z' };

describe('App session handling', () => {
  let routes: Record<string, (init?: RequestInit) => Response>;

  beforeEach(() => {
    window.location.hash = '';
    routes = {};
    api.configure({
      getToken: loadToken,
      onError: (e) => toast.error(describeError(e)),
      fetch: (async (input: RequestInfo | URL, init?: RequestInit) => {
        const path = String(input).split('?')[0];
        const handler = routes[path];
        return handler ? handler(init) : json(404, { error: { code: 'not_found', message: 'not found' } });
      }) as typeof fetch,
    });
  });

  afterEach(() => {
    clearToasts();
    api.configure({ fetch: undefined });
  });

  it('sends an anonymous visitor to the login page', async () => {
    render(<App />);
    expect(await screen.findByRole('heading', { name: 'Log in to Perpetuo' })).toBeTruthy();
    expect(window.location.hash).toBe('#/login');
  });

  it('validates the login form before sending', async () => {
    const fetchSpy = vi.fn();
    api.configure({ fetch: fetchSpy as unknown as typeof fetch });
    render(<App />);
    const user = userEvent.setup();
    await user.click(await screen.findByRole('button', { name: 'Log in' }));
    expect(screen.getByText('Enter your email address.')).toBeTruthy();
    expect(screen.getByText('Enter your password.')).toBeTruthy();
    // Only the server's public settings were asked for; no credentials were sent.
    const paths = fetchSpy.mock.calls.map((call) => String(call[0]).split('?')[0]);
    expect(paths.filter((p) => !p.endsWith('/meta'))).toEqual([]);
  });

  it('offers signup while the server allows it', async () => {
    routes['/meta'] = () => json(200, { gateway_url: 'http://127.0.0.1:8000', signup_enabled: true });
    render(<App />);
    expect(await screen.findByRole('link', { name: 'Create an account' })).toBeTruthy();
  });

  it('hides the signup link and form when the server closed signup', async () => {
    routes['/meta'] = () => json(200, { gateway_url: 'http://127.0.0.1:8000', signup_enabled: false });
    const signups: unknown[] = [];
    routes['/auth/signup'] = (init) => {
      signups.push(init?.body);
      return json(403, { error: { code: 'signup_disabled', message: 'signup is closed' } });
    };
    render(<App />);
    expect(await screen.findByText('Accounts on this server are created by its administrator.')).toBeTruthy();
    expect(screen.queryByRole('link', { name: 'Create an account' })).toBeNull();

    window.location.hash = '#/signup';
    expect(await screen.findByRole('heading', { name: 'Signup is closed' })).toBeTruthy();
    expect(screen.queryByRole('button', { name: 'Create account' })).toBeNull();
    expect(screen.queryByLabelText('Password')).toBeNull();
    expect(signups).toEqual([]);
  });

  it('goes back to login with a message when the API answers 401', async () => {
    saveToken('stale-token');
    routes['/auth/me'] = () => json(401, { error: { code: 'invalid_token', message: 'authentication required' } });
    render(<App />);
    expect(await screen.findByRole('heading', { name: 'Log in to Perpetuo' })).toBeTruthy();
    expect(screen.getByText('Your session has expired. Please log in again.')).toBeTruthy();
    expect(loadToken()).toBeNull();
  });

  it('shows a server error in one toast', async () => {
    routes['/auth/login'] = () => json(401, { error: { code: 'invalid_credentials', message: 'wrong email or password' } });
    render(<App />);
    const user = userEvent.setup();
    await user.type(await screen.findByLabelText('Email'), 'ana@example.com');
    await user.type(screen.getByLabelText('Password'), 'password123');
    await user.click(screen.getByRole('button', { name: 'Log in' }));
    const alerts = await screen.findAllByText('Wrong email or password');
    expect(alerts).toHaveLength(1);
    expect(screen.getByRole('heading', { name: 'Log in to Perpetuo' })).toBeTruthy();
  });

  it('logs in, loads workspaces and logs out', async () => {
    routes['/auth/login'] = () => json(200, { token: 'good', refresh_token: 'ppr-1', user: USER });
    routes['/auth/me'] = () => json(200, { user: USER, workspaces: [WORKSPACE] });
    const logouts: (string | undefined)[] = [];
    routes['/auth/logout'] = (init) => {
      logouts.push((init?.headers as Record<string, string>).Authorization);
      return new Response(null, { status: 204 });
    };
    routes['/meta'] = () => json(200, { gateway_url: 'http://127.0.0.1:8000' });
    routes['/workspaces/w1/providers'] = () => json(200, { data: [] });
    routes['/workspaces/w1/usage'] = () =>
      json(200, {
        from: '2025-01-01T00:00:00Z',
        to: '2025-01-02T00:00:00Z',
        granularity: 'hour',
        totals: { requests: 0, errors: 0, prompt_tokens: 0, completion_tokens: 0, total_tokens: 0, cost_usd: 0, cache_hits: 0, cache_hit_tokens: 0, cache_saved_usd: 0 },
        series: [],
      });
    render(<App />);
    const user = userEvent.setup();
    await user.type(await screen.findByLabelText('Email'), 'ana@example.com');
    await user.type(screen.getByLabelText('Password'), 'password123');
    await user.click(screen.getByRole('button', { name: 'Log in' }));
    expect(await screen.findByRole('heading', { name: 'Acme', level: 1 })).toBeTruthy();
    expect(await screen.findByText('http://127.0.0.1:8000/v1')).toBeTruthy();
    expect(screen.getByLabelText('Workspace')).toHaveProperty('value', 'w1');
    expect(loadToken()).toBe('good');
    expect(loadRefreshToken()).toBe('ppr-1');

    await user.click(screen.getByRole('button', { name: 'Log out' }));
    expect(await screen.findByText('You have been logged out.')).toBeTruthy();
    expect(logouts).toEqual(['Bearer good']);
    expect(loadToken()).toBeNull();
    expect(loadRefreshToken()).toBeNull();
  });

  it('refreshes an expired access token and stays in the app', async () => {
    saveTokens({ token: 'stale', refresh_token: 'ppr-1' });
    const authorized = (init?: RequestInit) => (init?.headers as Record<string, string>).Authorization === 'Bearer fresh';
    const refreshed: unknown[] = [];
    routes['/auth/me'] = (init) =>
      authorized(init)
        ? json(200, { user: USER, workspaces: [WORKSPACE] })
        : json(401, { error: { code: 'invalid_token', message: 'token is invalid' } });
    routes['/auth/refresh'] = (init) => {
      refreshed.push(JSON.parse(String(init?.body)));
      return json(200, { token: 'fresh', refresh_token: 'ppr-2' });
    };
    routes['/meta'] = () => json(200, { gateway_url: 'http://127.0.0.1:8000' });
    routes['/workspaces/w1/providers'] = () => json(200, { data: [] });
    render(<App />);
    expect(await screen.findByRole('heading', { name: 'Acme', level: 1 })).toBeTruthy();
    expect(refreshed).toEqual([{ refresh_token: 'ppr-1' }]);
    expect(loadToken()).toBe('fresh');
    expect(loadRefreshToken()).toBe('ppr-2');
  });

  it('lists logs and opens a request in the detail panel', async () => {
    saveToken('good');
    window.location.hash = '#/logs';
    const log = {
      id: 'r1',
      created_at: new Date().toISOString(),
      api_key_id: 'k1',
      route: 'messages',
      provider_id: 'p2',
      provider_name: 'Backup',
      provider_kind: 'openai_compatible',
      model_requested: 'gpt-4o-mini',
      model_served: 'local-mini',
      status: 200,
      error_kind: null,
      streamed: true,
      prompt_tokens: 1200,
      completion_tokens: 34,
      total_tokens: 1234,
      cost_usd: 0.000123,
      usage_source: 'estimated',
      latency_ms: 1450,
      ttfb_ms: 320,
      attempts: [
        { provider_id: 'p1', provider_name: 'Primary', status: 503, latency_ms: 80, error_kind: 'upstream_5xx' },
        { provider_id: 'p2', provider_name: 'Backup', status: 200, latency_ms: 1370, error_kind: null },
      ],
    };
    const seen: string[] = [];
    routes['/auth/me'] = () => json(200, { user: USER, workspaces: [WORKSPACE] });
    routes['/workspaces/w1/providers'] = () => json(200, { data: [] });
    routes['/workspaces/w1/logs'] = () => json(200, { data: [log], limit: 25, next_cursor: null, prev_cursor: null, total: null });
    routes['/workspaces/w1/api-keys'] = () =>
      json(200, {
        data: [
          {
            id: 'k1',
            name: 'ci',
            prefix: 'pp-abcd',
            created_at: new Date().toISOString(),
            last_used_at: null,
            revoked_at: null,
            expires_at: null,
            label: 'Nightly jobs',
            owner_email: 'ops@example.com',
          },
        ],
      });
    api.configure({
      fetch: (async (input: RequestInfo | URL) => {
        seen.push(String(input));
        const handler = routes[String(input).split('?')[0]];
        return handler ? handler() : json(404, { error: { code: 'not_found', message: 'not found' } });
      }) as typeof fetch,
    });
    render(<App />);
    const user = userEvent.setup();
    expect(await screen.findByRole('heading', { name: 'Logs', level: 1 })).toBeTruthy();
    expect(await screen.findByText('$0.000123')).toBeTruthy();
    expect(screen.getByText('1,234')).toBeTruthy();
    expect(screen.getByText('1.45 s')).toBeTruthy();
    expect(seen.some((u) => u.startsWith('/workspaces/w1/logs?limit=25'))).toBe(true);
    // The keys for names and the filter: a page one larger than the picker, not every key.
    expect(seen.some((u) => u.startsWith('/workspaces/w1/api-keys?limit=500'))).toBe(true);
    expect(seen.some((u) => u.includes('cursor=') || u.includes('page='))).toBe(false);
    expect(screen.getByRole('button', { name: 'Newer' })).toHaveProperty('disabled', true);
    expect(screen.getByRole('button', { name: 'Older' })).toHaveProperty('disabled', true);

    await user.click(screen.getByRole('button', { name: /^Details of request/ }));
    const dialog = await screen.findByRole('dialog', { name: 'Request details' });
    expect(dialog.textContent).toContain('Attempts (2)');
    expect(dialog.textContent).toContain('Primary');
    expect(dialog.textContent).toContain('upstream_5xx');
    expect(dialog.textContent).toContain('320 ms');
    expect(dialog.textContent).toContain('Estimated by the gateway');
    expect(dialog.textContent).toContain('local-mini');
    expect(dialog.textContent).toContain('Anthropic Messages');
    expect(dialog.textContent).toContain('Nightly jobs');
    expect(dialog.textContent).toContain('ops@example.com');

    await user.keyboard('{Escape}');
    expect(screen.queryByRole('dialog')).toBeNull();

    await user.type(screen.getByLabelText('Status'), '42');
    await user.click(screen.getByRole('button', { name: 'Apply filters' }));
    expect(screen.getByText('Use an HTTP status code, e.g. 200 or 429.')).toBeTruthy();
    await user.clear(screen.getByLabelText('Status'));
    await user.type(screen.getByLabelText('Status'), '429');
    await user.click(screen.getByRole('button', { name: 'Apply filters' }));
    await screen.findByText('$0.000123');
    expect(seen.some((u) => u.includes('status=429'))).toBe(true);
    expect(window.location.hash).toBe('#/logs?status=429');
  });

  it('pages through logs with Older and Newer, back to the newest page', async () => {
    saveToken('good');
    window.location.hash = '#/logs';
    const entry = (id: string, model: string) => ({
      id,
      created_at: new Date().toISOString(),
      api_key_id: null,
      route: 'chat',
      provider_id: 'p1',
      provider_name: 'Primary',
      provider_kind: 'openai',
      model_requested: model,
      model_served: model,
      status: 200,
      error_kind: null,
      streamed: false,
      prompt_tokens: 1,
      completion_tokens: 1,
      total_tokens: 2,
      cost_usd: null,
      usage_source: 'provider',
      latency_ms: 10,
      ttfb_ms: 5,
      attempts: [],
    });
    // Three pages of the server: the newest, an older one, and the newer page seen from
    // the older one (the newest rows again, so no newer cursor).
    const pages: Record<string, unknown> = {
      '': { data: [entry('r1', 'model-newest')], limit: 25, next_cursor: 'c-older', prev_cursor: null, total: null },
      'c-older': { data: [entry('r2', 'model-older')], limit: 25, next_cursor: null, prev_cursor: 'c-newer', total: null },
      'c-newer': { data: [entry('r1', 'model-newest')], limit: 25, next_cursor: 'c-older', prev_cursor: null, total: null },
    };
    const asked: string[] = [];
    routes['/auth/me'] = () => json(200, { user: USER, workspaces: [WORKSPACE] });
    routes['/workspaces/w1/providers'] = () => json(200, { data: [] });
    routes['/workspaces/w1/api-keys'] = () => json(200, { data: [] });
    api.configure({
      fetch: (async (input: RequestInfo | URL) => {
        const url = new URL(String(input), 'http://dashboard.test');
        if (url.pathname === '/workspaces/w1/logs') {
          const cursor = url.searchParams.get('cursor') ?? '';
          asked.push(cursor);
          return json(200, pages[cursor]);
        }
        const handler = routes[url.pathname];
        return handler ? handler() : json(404, { error: { code: 'not_found', message: 'not found' } });
      }) as typeof fetch,
    });
    render(<App />);
    const user = userEvent.setup();
    expect(await screen.findByText('model-newest')).toBeTruthy();
    expect(screen.getByRole('button', { name: 'Newer' })).toHaveProperty('disabled', true);

    await user.click(screen.getByRole('button', { name: 'Older' }));
    expect(await screen.findByText('model-older')).toBeTruthy();
    expect(window.location.hash).toBe('#/logs?cursor=c-older');
    expect(screen.getByRole('button', { name: 'Older' })).toHaveProperty('disabled', true);

    await user.click(screen.getByRole('button', { name: 'Newer' }));
    expect(await screen.findByText('model-newest')).toBeTruthy();
    // The newer page reached the newest rows: the view shows the newest page itself.
    await vi.waitFor(() => expect(window.location.hash).toBe('#/logs'));
    await vi.waitFor(() => expect(asked).toEqual(['', 'c-older', 'c-newer', '']));
    expect(await screen.findByText('model-newest')).toBeTruthy();
    expect(screen.getByRole('button', { name: 'Newer' })).toHaveProperty('disabled', true);
    expect(screen.getByRole('button', { name: 'Older' })).toHaveProperty('disabled', false);
  });

  it('shows a new API key once, with a warning', async () => {
    saveToken('good');
    window.location.hash = '#/api-keys';
    const created = {
      id: 'k9',
      name: 'ci',
      prefix: 'pp-abc',
      created_at: new Date().toISOString(),
      last_used_at: null,
      revoked_at: null,
      expires_at: null,
      key: 'pp-abc-secret-value-1234567890',
    };
    routes['/auth/me'] = () => json(200, { user: USER, workspaces: [WORKSPACE] });
    routes['/workspaces/w1/api-keys'] = () => json(200, { data: [] });
    let posted: unknown = null;
    api.configure({
      fetch: (async (input: RequestInfo | URL, init?: RequestInit) => {
        if (init?.method === 'POST') {
          posted = JSON.parse(String(init.body));
          return json(201, created);
        }
        const handler = routes[String(input).split('?')[0]];
        return handler ? handler() : json(404, { error: { code: 'not_found', message: 'not found' } });
      }) as typeof fetch,
    });
    render(<App />);
    const user = userEvent.setup();
    expect(await screen.findByText('No API keys')).toBeTruthy();
    await user.click(screen.getByRole('button', { name: 'Create API key' }));
    await user.type(screen.getByLabelText('Key name'), 'ci');
    await user.click(screen.getByRole('button', { name: 'Create key' }));
    const dialog = await screen.findByRole('dialog', { name: 'API key created' });
    expect(posted).toEqual({ name: 'ci' });
    expect(screen.getByLabelText('New API key')).toHaveProperty('value', created.key);
    expect(dialog.textContent).toContain('It will not be shown again');
    await user.click(screen.getByRole('button', { name: 'Done' }));
    expect(screen.queryByDisplayValue(created.key)).toBeNull();
    expect(screen.getByText('pp-abc…')).toBeTruthy();
    expect(screen.getByText('Active')).toBeTruthy();
  });
});
