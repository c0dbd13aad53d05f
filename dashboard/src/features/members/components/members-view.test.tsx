import { render, screen, within } from '@testing-library/react';
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
const MEMBERS = [
  { user_id: 'u0', email: 'boss@example.com', role: 'owner', joined_at: '2025-01-01T00:00:00Z' },
  { user_id: 'u1', email: 'ana@example.com', role: 'admin', joined_at: '2025-01-02T00:00:00Z' },
  { user_id: 'u2', email: 'bo@example.com', role: 'member', joined_at: '2025-01-03T00:00:00Z' },
];

describe('members and roles in the dashboard', () => {
  let routes: Record<string, (init?: RequestInit) => Response>;
  let role: string;

  beforeEach(() => {
    routes = {};
    role = 'admin';
    saveToken('token');
    saveWorkspaceId('w1');
    routes['/auth/me'] = () => json(200, { user: USER, workspaces: [{ id: 'w1', name: 'Acme', role, created_at: '2025-01-01T00:00:00Z' }] });
    routes['/workspaces/w1/members'] = () => json(200, { data: MEMBERS });
    routes['/workspaces/w1/invitations'] = () => json(200, { data: [] });
    api.configure({
      getToken: loadToken,
      onError: (e) => toast.error(describeError(e)),
      fetch: (async (input: RequestInfo | URL, init?: RequestInit) => {
        const path = String(input).split('?')[0];
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

  it('shows a viewer no provider form, no keys and no audit', async () => {
    role = 'viewer';
    window.location.hash = '#/providers/new';
    render(<App />);
    expect(await screen.findByText('Not available to your role')).toBeTruthy();
    expect(screen.queryByLabelText('Name')).toBeNull();
    const nav = screen.getByRole('navigation', { name: 'Main' });
    expect(within(nav).queryByRole('link', { name: 'Providers' })).toBeNull();
    expect(within(nav).queryByRole('link', { name: 'API keys' })).toBeNull();
    expect(within(nav).queryByRole('link', { name: 'Audit' })).toBeNull();
    expect(within(nav).getByRole('link', { name: 'Logs' })).toBeTruthy();
    expect(within(nav).getByRole('link', { name: 'Members' })).toBeTruthy();
  });

  it('lets an admin invite, change roles below owner and remove a member', async () => {
    window.location.hash = '#/members';
    const invited: unknown[] = [];
    routes['POST /workspaces/w1/invitations'] = (init) => {
      const body = JSON.parse(String(init?.body));
      invited.push(body);
      return json(201, {
        id: 'i1',
        email: body.email,
        role: body.role,
        invited_by: 'u1',
        invited_by_email: USER.email,
        created_at: '2025-01-04T00:00:00Z',
        expires_at: '2025-01-11T00:00:00Z',
        delivery: 'sent',
      });
    };
    routes['PUT /workspaces/w1/members/u2'] = (init) => {
      const role = JSON.parse(String(init?.body)).role;
      // A viewer holds no keys: the server revokes them and names them.
      return json(200, { ...MEMBERS[2], role, revoked_api_keys: role === 'viewer' ? [{ id: 'k0', name: 'old', prefix: 'pp-0' }] : [] });
    };
    routes['DELETE /workspaces/w1/members/u2'] = () => json(200, { user_id: 'u2', revoked_api_keys: [{ id: 'k', name: 'ci', prefix: 'pp-1' }] });
    render(<App />);
    const user = userEvent.setup();
    expect(await screen.findByRole('cell', { name: /bo@example.com/ })).toBeTruthy();
    // The owner's role cannot be changed by an admin; the member's can, but not to owner.
    expect(screen.queryByLabelText('Role of boss@example.com')).toBeNull();
    const select = screen.getByLabelText('Role of bo@example.com') as HTMLSelectElement;
    expect([...select.options].map((o) => o.value)).toEqual(['viewer', 'member', 'admin']);
    await user.selectOptions(select, 'viewer');
    expect(await screen.findByText('bo@example.com is now viewer; their API key “old” was revoked.')).toBeTruthy();

    await user.type(screen.getByLabelText('Email'), 'new@example.com');
    await user.selectOptions(screen.getByLabelText('Role'), 'viewer');
    await user.click(screen.getByRole('button', { name: 'Send invitation' }));
    expect(await screen.findByText('Invitation sent to new@example.com.')).toBeTruthy();
    expect(invited).toEqual([{ email: 'new@example.com', role: 'viewer' }]);
    expect(await screen.findByRole('cell', { name: 'new@example.com' })).toBeTruthy();

    await user.click(screen.getByRole('button', { name: 'Remove bo@example.com' }));
    await user.click(screen.getByRole('button', { name: 'Remove member' }));
    expect(await screen.findByText('bo@example.com was removed; their API key “ci” was revoked.')).toBeTruthy();
    expect(screen.queryByRole('cell', { name: /bo@example.com/ })).toBeNull();
  });

  it('tells an unverified account to verify', async () => {
    routes['/auth/me'] = () =>
      json(200, { user: { ...USER, email_verified: false }, workspaces: [{ id: 'w1', name: 'Acme', role: 'owner', created_at: '2025-01-01T00:00:00Z' }] });
    routes['/meta'] = () => json(200, { gateway_url: 'http://127.0.0.1:8000' });
    window.location.hash = '#/members';
    render(<App />);
    expect(await screen.findByText(/Verify your email address/)).toBeTruthy();
    expect(screen.getByRole('button', { name: 'Send a new link' })).toBeTruthy();
  });
});
