import { ApiKeysView } from '../features/api-keys/components/api-keys-view';

export default function ApiKeysRoute() {
  return <ApiKeysView />;
}
