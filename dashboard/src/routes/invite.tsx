import { AcceptInvitation } from '@/features/members/components/accept-invitation';

export default function InviteRoute() {
  return <AcceptInvitation />;
}
