import { ProviderCreateView } from '@/features/providers/components/provider-editor';
import { RoleGate } from '@/features/members/components/role-gate';

export default function ProviderNewRoute() {
  return (
    <RoleGate permission="manageProviders" title="Add provider">
      <ProviderCreateView />
    </RoleGate>
  );
}
