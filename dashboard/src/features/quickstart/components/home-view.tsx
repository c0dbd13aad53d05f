import { useState } from 'react';
import { Link } from 'react-router-dom';
import { useResource } from '@/lib/use-resource';
import { Card } from '@/components/ui/card';
import { PageHeader } from '@/components/ui/page-header';
import { ErrorState, LoadingState } from '@/components/ui/states';
import { useSession, useWorkspaceId } from '@/features/auth/session-context';
import { getUsage } from '@/features/usage/api';
import { UsageTotals } from '@/features/usage/components/usage-totals';
import { periodRange, type Range } from '@/features/usage/schema';
import { Quickstart } from './quickstart';

export function HomeView() {
  const workspaceId = useWorkspaceId();
  const { workspace } = useSession();
  const [range] = useState<Range>(() => periodRange('24h', Date.now()) as Range);
  const usage = useResource((signal) => getUsage(workspaceId, range, signal), [workspaceId, range]);

  return (
    <>
      <PageHeader title={workspace?.name ?? 'Overview'} description="Your gateway at a glance." />
      <Quickstart />
      <Card title="Last 24 hours" actions={<Link to="/usage">View usage</Link>}>
        {usage.loading ? (
          <LoadingState />
        ) : usage.error && !usage.data ? (
          <ErrorState error={usage.error} onRetry={usage.reload} title="Could not load usage" />
        ) : usage.data ? (
          <UsageTotals totals={usage.data.totals} />
        ) : null}
      </Card>
    </>
  );
}
