import { useNavigate } from 'react-router-dom';
import { toast } from '@/lib/toast-store';
import { useResource } from '@/lib/use-resource';
import { Card } from '@/components/ui/card';
import { PageHeader } from '@/components/ui/page-header';
import { EmptyState, ErrorState, LoadingState } from '@/components/ui/states';
import { useSession, useWorkspaceId } from '@/features/auth/session-context';
import { can } from '@/features/members/schema';
import { createProvider, listProviders, updateProvider } from '../api';
import { emptyProviderValues, kindInfo, nextPriority, providerToValues, quotaText, type Provider } from '../schema';
import { ProviderForm } from './provider-form';
import { ProviderKeys } from './provider-keys';

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

/**
 * An entry's page: its keys with their traffic and health for everyone who sees
 * providers, and the form that changes the entry for those who manage them.
 */
export function ProviderEditView({ providerId }: { providerId: string }) {
  const workspaceId = useWorkspaceId();
  const navigate = useNavigate();
  const manage = can(useSession().workspace?.role, 'manageProviders');
  const providers = useResource((signal) => listProviders(workspaceId, signal), [workspaceId]);
  const provider = providers.data?.find((p) => p.id === providerId);
  const title = provider ? (manage ? `Edit ${provider.name}` : provider.name) : manage ? 'Edit provider' : 'Provider';

  return (
    <>
      <PageHeader title={title} />
      <Card>
        {providers.loading ? (
          <LoadingState />
        ) : providers.error && !providers.data ? (
          <ErrorState error={providers.error} onRetry={providers.reload} />
        ) : !provider ? (
          <EmptyState title="Provider not found">It may have been deleted.</EmptyState>
        ) : manage ? (
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
        ) : (
          <ProviderSummary provider={provider} />
        )}
      </Card>
      {provider && (
        <Card>
          <ProviderKeys
            key={provider.id}
            workspaceId={workspaceId}
            provider={provider}
            manage={manage}
            onChanged={providers.reload}
          />
        </Card>
      )}
    </>
  );
}

/** What a member sees of an entry (the form is for admins). */
function ProviderSummary({ provider }: { provider: Provider }) {
  const info = kindInfo(provider.kind);
  return (
    <dl className="details">
      <dt>Kind</dt>
      <dd>{info.label}</dd>
      <dt>Endpoint</dt>
      <dd className="cell-mono">{provider.base_url ?? `${info.defaultBaseUrl ?? '—'} (default)`}</dd>
      <dt>Priority</dt>
      <dd>{provider.priority}</dd>
      <dt>Weight</dt>
      <dd>{provider.weight}</dd>
      <dt>Quota</dt>
      <dd>{quotaText(provider.quota)}</dd>
      <dt>Models</dt>
      <dd>{provider.models.length === 0 ? 'All models' : provider.models.join(', ')}</dd>
    </dl>
  );
}
