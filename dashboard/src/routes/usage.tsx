import { UsageView } from '@/features/usage/components/usage-view';

export default function UsageRoute() {
  return <UsageView />;
}
