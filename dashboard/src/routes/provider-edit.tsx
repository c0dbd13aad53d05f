import { useParams } from 'react-router-dom';
import { ProviderEditView } from '@/features/providers/components/provider-editor';
import { RoleGate } from '@/features/members/components/role-gate';

export default function ProviderEditRoute() {
  const { providerId = '' } = useParams();
  return (
    <RoleGate permission="viewProviders" title="Provider">
      <ProviderEditView providerId={providerId} />
    </RoleGate>
  );
}
