import { ProviderCreateView } from '../features/providers/components/provider-editor';

export default function ProviderNewRoute() {
  return <ProviderCreateView />;
}
