import { AuditView } from '@/features/audit/components/audit-view';
import { RoleGate } from '@/features/members/components/role-gate';

export default function AuditRoute() {
  return (
    <RoleGate permission="viewAudit" title="Audit log">
      <AuditView />
    </RoleGate>
  );
}
