import { useNavigate } from 'react-router-dom';
import { toast } from '@/lib/toast-store';
import { useResource } from '@/lib/use-resource';
import { Card } from '@/components/ui/card';
import { PageHeader } from '@/components/ui/page-header';
import { EmptyState, ErrorState, LoadingState } from '@/components/ui/states';
import { useWorkspaceId } from '@/features/auth/session-context';
import { createProvider, listProviders, updateProvider } from '../api';
import { emptyProviderValues, nextPriority, providerToValues } from '../schema';
import { ProviderForm } from './provider-form';

export function ProviderCreateView() {
  const workspaceId = useWorkspaceId();
  const navigate = useNavigate();
  const providers = useResource((signal) => listProviders(workspaceId, signal), [workspaceId]);

  return (
    <>
      <PageHeader title="Add provider" description="Connect an upstream model provider to this workspace." />
      <Card>
        {providers.loading ? (
          <LoadingState />
        ) : (
          <ProviderForm
            mode="create"
            initialValues={emptyProviderValues(nextPriority(providers.data ?? []))}
            onCancel={() => navigate('/providers')}
            onSubmit={async (input) => {
              const created = await createProvider(workspaceId, input);
              toast.success(`${created.name} added.`);
              navigate('/providers');
            }}
          />
        )}
      </Card>
    </>
  );
}

export function ProviderEditView({ providerId }: { providerId: string }) {
  const workspaceId = useWorkspaceId();
  const navigate = useNavigate();
  const providers = useResource((signal) => listProviders(workspaceId, signal), [workspaceId]);
  const provider = providers.data?.find((p) => p.id === providerId);

  return (
    <>
      <PageHeader title={provider ? `Edit ${provider.name}` : 'Edit provider'} />
      <Card>
        {providers.loading ? (
          <LoadingState />
        ) : providers.error ? (
          <ErrorState error={providers.error} onRetry={providers.reload} />
        ) : !provider ? (
          <EmptyState title="Provider not found">It may have been deleted.</EmptyState>
        ) : (
          <ProviderForm
            key={provider.id}
            mode="edit"
            original={provider}
            initialValues={providerToValues(provider)}
            onCancel={() => navigate('/providers')}
            onSubmit={async (input) => {
              const updated = await updateProvider(workspaceId, provider.id, input);
              toast.success(`${updated.name} saved.`);
              navigate('/providers');
            }}
          />
        )}
      </Card>
    </>
  );
}
