import { useState } from 'react';
import { NavLink, Outlet } from 'react-router-dom';
import { Button } from '../ui/button';
import { EmptyState } from '../ui/states';
import { useSession } from '../../features/auth/session-context';
import { NewWorkspaceDialog, WorkspaceSwitcher } from '../../features/workspaces/components/workspace-switcher';
import { Logo } from './logo';

const NAV = [
  { to: '/', label: 'Overview', end: true },
  { to: '/providers', label: 'Providers' },
  { to: '/api-keys', label: 'API keys' },
  { to: '/logs', label: 'Logs' },
  { to: '/usage', label: 'Usage' },
  { to: '/settings', label: 'Settings' },
];

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
          {NAV.map((item) => (
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
