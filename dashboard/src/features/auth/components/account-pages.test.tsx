import { render, screen } from '@testing-library/react';
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

describe('pages opened from emailed links', () => {
  let routes: Record<string, (init?: RequestInit) => Response>;
  let sent: { path: string; body: unknown }[];

  beforeEach(() => {
    routes = {};
    sent = [];
    api.configure({
      getToken: loadToken,
      onError: (e) => toast.error(describeError(e)),
      fetch: (async (input: RequestInfo | URL, init?: RequestInit) => {
        const path = String(input).split('?')[0];
        if (init?.body) sent.push({ path, body: JSON.parse(String(init.body)) });
        const handler = routes[path];
        return handler ? handler(init) : json(404, { error: { code: 'not_found', message: 'not found' } });
      }) as typeof fetch,
    });
  });

  afterEach(() => {
    clearToasts();
    api.configure({ fetch: undefined });
    window.location.hash = '';
  });

  it('verifies an email with the token of the link', async () => {
    routes['/auth/verify-email'] = () => json(200, USER);
    window.location.hash = '#/verify-email?token=ppv-abc';
    render(<App />);
    expect(await screen.findByText(/Your email address is verified/)).toBeTruthy();
    expect(sent).toEqual([{ path: '/auth/verify-email', body: { token: 'ppv-abc' } }]);
  });

  it('says when a verification link no longer works', async () => {
    routes['/auth/verify-email'] = () =>
      json(400, { error: { code: 'token_invalid', message: 'this link is unknown, expired or already used; ask for a new one' } });
    window.location.hash = '#/verify-email?token=old';
    render(<App />);
    expect(await screen.findByText(/expired or already used/)).toBeTruthy();
  });

  it('asks for a reset link and shows the same answer for any address', async () => {
    routes['/auth/password-reset'] = () => json(202, { message: 'if an account uses this address, a link to reset its password is on its way' });
    window.location.hash = '#/login';
    render(<App />);
    const user = userEvent.setup();
    await user.click(await screen.findByRole('link', { name: 'Forgot your password?' }));
    await user.type(await screen.findByLabelText('Email'), 'who@example.com');
    await user.click(screen.getByRole('button', { name: 'Send a reset link' }));
    expect(await screen.findByText(/If an account uses this address/)).toBeTruthy();
    expect(sent).toEqual([{ path: '/auth/password-reset', body: { email: 'who@example.com' } }]);
  });

  it('sets a new password with the token of the link', async () => {
    routes['/auth/password-reset/confirm'] = () => new Response(null, { status: 204 });
    window.location.hash = '#/reset-password?token=ppr-reset-xyz';
    render(<App />);
    const user = userEvent.setup();
    await user.type(await screen.findByLabelText('New password'), 'short');
    await user.click(screen.getByRole('button', { name: 'Set password' }));
    expect(await screen.findByText('Use at least 8 characters.')).toBeTruthy();
    expect(sent).toEqual([]);
    await user.type(screen.getByLabelText('New password'), ' and longer');
    await user.click(screen.getByRole('button', { name: 'Set password' }));
    expect(await screen.findByText(/every other session was logged out/)).toBeTruthy();
    expect(sent).toEqual([{ path: '/auth/password-reset/confirm', body: { token: 'ppr-reset-xyz', new_password: 'short and longer' } }]);
  });

  it('accepts an invitation as the signed-in user and opens its workspace', async () => {
    saveToken('token');
    saveWorkspaceId('w0');
    const own = { id: 'w0', name: 'Mine', role: 'owner', created_at: '2025-01-01T00:00:00Z' };
    const invited = { id: 'w1', name: 'Acme', role: 'viewer', created_at: '2025-01-01T00:00:00Z' };
    let accepted = false;
    routes['/auth/me'] = () => json(200, { user: USER, workspaces: accepted ? [own, invited] : [own] });
    routes['/invitations/accept'] = () => {
      accepted = true;
      return json(200, invited);
    };
    routes['/meta'] = () => json(200, { gateway_url: 'http://127.0.0.1:8000' });
    window.location.hash = '#/invite?token=ppi-123';
    render(<App />);
    const user = userEvent.setup();
    await user.click(await screen.findByRole('button', { name: 'Accept invitation' }));
    expect(await screen.findByRole('heading', { name: 'Acme', level: 1 })).toBeTruthy();
    expect(sent).toEqual([{ path: '/invitations/accept', body: { token: 'ppi-123' } }]);
  });

  it('sends a visitor without a session to sign up, then back to the invitation', async () => {
    window.location.hash = '#/invite?token=ppi-123';
    render(<App />);
    expect(await screen.findByText(/Sign in with the address the invitation was sent to/)).toBeTruthy();
    expect(screen.getByRole('link', { name: 'Create an account' })).toBeTruthy();
    expect(screen.getByRole('link', { name: 'Log in' })).toBeTruthy();
  });
});
