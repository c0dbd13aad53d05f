import type { ReactNode } from 'react';
import { PageHeader } from '@/components/ui/page-header';
import { EmptyState } from '@/components/ui/states';
import { useSession } from '@/features/auth/session-context';
import { can, NEEDS, ROLE_LABEL, type Permission } from '../schema';

/** Shows `children` only to roles that have `permission`; others get an explanation. */
export function RoleGate({ permission, title, children }: { permission: Permission; title: string; children: ReactNode }) {
  const { workspace } = useSession();
  if (can(workspace?.role, permission)) return <>{children}</>;
  return (
    <>
      <PageHeader title={title} />
      <EmptyState title="Not available to your role">
        This needs the {ROLE_LABEL[NEEDS[permission]].toLowerCase()} role or higher; yours is {workspace?.role ?? 'unknown'}. Ask an admin of the workspace.
      </EmptyState>
    </>
  );
}
