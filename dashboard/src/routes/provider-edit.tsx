import { useParams } from 'react-router-dom';
import { ProviderEditView } from '../features/providers/components/provider-editor';

export default function ProviderEditRoute() {
  const { providerId = '' } = useParams();
  return <ProviderEditView providerId={providerId} />;
}
