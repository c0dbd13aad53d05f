import { useState } from 'react';
import { ApiError } from '@/lib/api';
import { toast } from '@/lib/toast-store';
import { NavLink, Outlet } from 'react-router-dom';
import { Button } from '@/components/ui/button';
import { EmptyState } from '@/components/ui/states';
import { resendVerification } from '@/features/auth/api';
import { useSession } from '@/features/auth/session-context';
import { can, type Permission } from '@/features/members/schema';
import { NewWorkspaceDialog, WorkspaceSwitcher } from '@/features/workspaces/components/workspace-switcher';
import { Logo } from './logo';

/** Entries a role cannot use are not shown (the server refuses them anyway). */
const NAV: { to: string; label: string; end?: boolean; needs?: Permission }[] = [
  { to: '/', label: 'Overview', end: true },
  { to: '/providers', label: 'Providers', needs: 'viewProviders' },
  { to: '/api-keys', label: 'API keys', needs: 'viewKeys' },
  { to: '/logs', label: 'Logs' },
  { to: '/usage', label: 'Usage' },
  { to: '/members', label: 'Members' },
  { to: '/audit', label: 'Audit', needs: 'viewAudit' },
  { to: '/settings', label: 'Settings' },
];

function VerifyBanner() {
  const [busy, setBusy] = useState(false);
  async function resend() {
    setBusy(true);
    try {
      const answer = await resendVerification();
      toast.success(answer.message.charAt(0).toUpperCase() + answer.message.slice(1) + '.');
    } catch (err) {
      if (err instanceof ApiError && err.code === 'rate_limited' && !err.handled)
        toast.info('A link was sent a moment ago; check your inbox.');
    } finally {
      setBusy(false);
    }
  }
  return (
    <div className="banner banner-warning" role="status">
      Verify your email address to create API keys and add providers: follow the link we sent you.{' '}
      <Button size="sm" variant="ghost" busy={busy} onClick={() => void resend()}>
        Send a new link
      </Button>
    </div>
  );
}

export function AppShell() {
  const { user, logout, workspace } = useSession();
  const [creating, setCreating] = useState(false);

  return (
    <div className="shell">
      <a href="#main" className="skip-link" onClick={(e) => {
        e.preventDefault();
        document.getElementById('main')?.focus();
      }}>
        Skip to content
      </a>
      <aside className="sidebar">
        <div className="sidebar-brand">
          <Logo />
        </div>
        <WorkspaceSwitcher />
        <nav aria-label="Main" className="nav">
          {NAV.filter((item) => !item.needs || can(workspace?.role, item.needs)).map((item) => (
            <NavLink key={item.to} to={item.to} end={item.end} className={({ isActive }) => `nav-link${isActive ? ' active' : ''}`}>
              {item.label}
            </NavLink>
          ))}
        </nav>
        <div className="sidebar-footer">
          {user && (
            <div className="user" title={user.email}>
              {user.email}
            </div>
          )}
          <Button size="sm" variant="ghost" onClick={() => void logout('You have been logged out.')}>
            Log out
          </Button>
        </div>
      </aside>
      <main id="main" className="main" tabIndex={-1}>
        {user?.email_verified === false && <VerifyBanner />}
        {workspace ? (
          <Outlet />
        ) : (
          <EmptyState
            title="No workspace yet"
            action={
              <Button variant="primary" onClick={() => setCreating(true)}>
                Create a workspace
              </Button>
            }
          >
            Create a workspace to add providers and API keys.
          </EmptyState>
        )}
        <NewWorkspaceDialog open={creating} onClose={() => setCreating(false)} />
      </main>
    </div>
  );
}
