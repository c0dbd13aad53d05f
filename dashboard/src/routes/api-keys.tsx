import { ApiKeysView } from '@/features/api-keys/components/api-keys-view';
import { RoleGate } from '@/features/members/components/role-gate';

export default function ApiKeysRoute() {
  return (
    <RoleGate permission="viewKeys" title="API keys">
      <ApiKeysView />
    </RoleGate>
  );
}
