import { ProvidersView } from '@/features/providers/components/providers-view';
import { RoleGate } from '@/features/members/components/role-gate';

export default function ProvidersRoute() {
  return (
    <RoleGate permission="viewProviders" title="Providers">
      <ProvidersView />
    </RoleGate>
  );
}
