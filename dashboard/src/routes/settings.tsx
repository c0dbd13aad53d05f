import { PageHeader } from '@/components/ui/page-header';
import { WorkspaceSettings } from '@/features/workspaces/components/workspace-settings';

export default function SettingsRoute() {
  return (
    <>
      <PageHeader title="Settings" />
      <WorkspaceSettings />
    </>
  );
}
