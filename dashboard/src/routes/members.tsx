import { MembersView } from '@/features/members/components/members-view';

export default function MembersRoute() {
  return <MembersView />;
}
