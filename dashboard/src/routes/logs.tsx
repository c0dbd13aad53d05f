import { LogsView } from '@/features/logs/components/logs-view';

export default function LogsRoute() {
  return <LogsView />;
}
