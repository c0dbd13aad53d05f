import { api, seg } from '@/lib/api';
import type { Workspace } from '@/features/auth/schema';
import type { CreatedInvitation, Invitation, Member, RemovedMember, Role, UpdatedMember } from './schema';

const ws = (id: string) => `/workspaces/${seg(id)}`;

export function listMembers(workspaceId: string, signal?: AbortSignal) {
  return api.get<{ data: Member[] }>(`${ws(workspaceId)}/members`, { signal }).then((r) => r.data);
}

export function changeRole(workspaceId: string, userId: string, role: Role) {
  return api.put<UpdatedMember>(`${ws(workspaceId)}/members/${seg(userId)}`, { role });
}

export function removeMember(workspaceId: string, userId: string) {
  return api.delete<RemovedMember>(`${ws(workspaceId)}/members/${seg(userId)}`);
}

export function leaveWorkspace(workspaceId: string) {
  return api.post<RemovedMember>(`${ws(workspaceId)}/leave`);
}

export function transferOwnership(workspaceId: string, userId: string) {
  return api.post<{ data: Member[] }>(`${ws(workspaceId)}/transfer`, { user_id: userId }).then((r) => r.data);
}

export function listInvitations(workspaceId: string, signal?: AbortSignal) {
  return api.get<{ data: Invitation[] }>(`${ws(workspaceId)}/invitations`, { signal }).then((r) => r.data);
}

export function invite(workspaceId: string, email: string, role: Role) {
  return api.post<CreatedInvitation>(`${ws(workspaceId)}/invitations`, { email, role });
}

export function revokeInvitation(workspaceId: string, invitationId: string) {
  return api.delete<void>(`${ws(workspaceId)}/invitations/${seg(invitationId)}`);
}

export function acceptInvitation(token: string) {
  return api.post<Workspace>('/invitations/accept', { token });
}
