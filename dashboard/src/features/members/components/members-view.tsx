import { useState, type FormEvent } from 'react';
import { useNavigate } from 'react-router-dom';
import { fieldErrors } from '@/lib/api';
import { formatDate, formatDateTime } from '@/lib/format';
import { toast } from '@/lib/toast-store';
import { useResource } from '@/lib/use-resource';
import { Badge } from '@/components/ui/badge';
import { Button } from '@/components/ui/button';
import { Card } from '@/components/ui/card';
import { ConfirmDialog } from '@/components/ui/confirm-dialog';
import { SelectField, TextField } from '@/components/ui/field';
import { PageHeader } from '@/components/ui/page-header';
import { EmptyState, ErrorState, LoadingState } from '@/components/ui/states';
import { useSession } from '@/features/auth/session-context';
import { changeRole, invite, leaveWorkspace, listInvitations, listMembers, removeMember, revokeInvitation } from '../api';
import {
  assignableRoles,
  can,
  mayManageMember,
  revokedKeysMessage,
  roleChangedMessage,
  ROLE_HELP,
  ROLE_LABEL,
  validateInviteEmail,
  type Invitation,
  type Member,
  type Role,
} from '../schema';

export function MembersView() {
  const { workspace, user, retry } = useSession();
  const navigate = useNavigate();
  const workspaceId = workspace?.id ?? '';
  const myRole = workspace?.role;
  const manage = can(myRole, 'manageMembers');
  const members = useResource((signal) => listMembers(workspaceId, signal), [workspaceId]);
  const invitations = useResource((signal) => listInvitations(workspaceId, signal), [workspaceId], manage);
  const [toRemove, setToRemove] = useState<Member | null>(null);
  const [leaving, setLeaving] = useState(false);
  const [toRevoke, setToRevoke] = useState<Invitation | null>(null);

  async function setRole(member: Member, role: Role) {
    try {
      const { revoked_api_keys, ...updated } = await changeRole(workspaceId, member.user_id, role);
      members.setData((current) => (current ?? []).map((m) => (m.user_id === updated.user_id ? updated : m)));
      toast.success(roleChangedMessage(member.email, { ...updated, revoked_api_keys }));
      if (member.user_id === user?.id) retry();
    } catch {
      // Reported by the API client.
    }
  }

  async function remove(member: Member) {
    const removed = await removeMember(workspaceId, member.user_id);
    members.setData((current) => (current ?? []).filter((m) => m.user_id !== member.user_id));
    toast.success(revokedKeysMessage(member.email, removed));
  }

  async function leave() {
    await leaveWorkspace(workspaceId);
    toast.success(`You left ${workspace?.name ?? 'the workspace'}.`);
    retry();
    navigate('/');
  }

  async function revoke(invitation: Invitation) {
    await revokeInvitation(workspaceId, invitation.id);
    invitations.setData((current) => (current ?? []).filter((i) => i.id !== invitation.id));
    toast.success(`The invitation to ${invitation.email} was revoked.`);
  }

  const list = members.data ?? [];
  return (
    <>
      <PageHeader
        title="Members"
        description={`Everyone who shares ${workspace?.name ?? 'this workspace'}. Your role: ${myRole ?? '…'}.`}
        actions={
          <Button variant="ghost" onClick={() => setLeaving(true)}>
            Leave workspace
          </Button>
        }
      />
      <div className="stack">
        <Card title="Members">
          {members.loading ? (
            <LoadingState label="Loading members…" />
          ) : members.error && !members.data ? (
            <ErrorState error={members.error} onRetry={members.reload} title="Could not load members" />
          ) : (
            <div className="table-wrap">
              <table className="table">
                <caption className="sr-only">Members</caption>
                <thead>
                  <tr>
                    <th scope="col">Email</th>
                    <th scope="col">Role</th>
                    <th scope="col">Joined</th>
                    <th scope="col">
                      <span className="sr-only">Actions</span>
                    </th>
                  </tr>
                </thead>
                <tbody>
                  {list.map((m) => {
                    const editable = mayManageMember(myRole, m.role);
                    return (
                      <tr key={m.user_id}>
                        <td className="cell-title">
                          {m.email}
                          {m.user_id === user?.id && <span className="muted"> (you)</span>}
                        </td>
                        <td>
                          {editable ? (
                            <select
                              className="input input-sm"
                              aria-label={`Role of ${m.email}`}
                              value={m.role}
                              onChange={(e) => void setRole(m, e.target.value as Role)}
                            >
                              {assignableRoles(myRole).map((r) => (
                                <option key={r} value={r}>
                                  {ROLE_LABEL[r]}
                                </option>
                              ))}
                            </select>
                          ) : (
                            <Badge tone={m.role === 'owner' ? 'success' : 'neutral'}>{ROLE_LABEL[m.role] ?? m.role}</Badge>
                          )}
                        </td>
                        <td title={formatDateTime(m.joined_at)}>{formatDate(m.joined_at)}</td>
                        <td className="cell-actions">
                          {editable && m.user_id !== user?.id && (
                            <Button size="sm" variant="ghost" className="text-danger" aria-label={`Remove ${m.email}`} onClick={() => setToRemove(m)}>
                              Remove
                            </Button>
                          )}
                        </td>
                      </tr>
                    );
                  })}
                </tbody>
              </table>
            </div>
          )}
        </Card>

        {manage && <InviteCard workspaceId={workspaceId} myRole={myRole} onInvited={(i) => invitations.setData((c) => [i, ...(c ?? []).filter((x) => x.email !== i.email)])} />}

        {manage && (
          <Card title="Pending invitations">
            {invitations.loading ? (
              <LoadingState label="Loading invitations…" />
            ) : invitations.error && !invitations.data ? (
              <ErrorState error={invitations.error} onRetry={invitations.reload} title="Could not load invitations" />
            ) : (invitations.data ?? []).length === 0 ? (
              <EmptyState title="No pending invitations" />
            ) : (
              <div className="table-wrap">
                <table className="table">
                  <caption className="sr-only">Pending invitations</caption>
                  <thead>
                    <tr>
                      <th scope="col">Email</th>
                      <th scope="col">Role</th>
                      <th scope="col">Invited by</th>
                      <th scope="col">Expires</th>
                      <th scope="col">
                        <span className="sr-only">Actions</span>
                      </th>
                    </tr>
                  </thead>
                  <tbody>
                    {(invitations.data ?? []).map((i) => (
                      <tr key={i.id}>
                        <td className="cell-title">{i.email}</td>
                        <td>{ROLE_LABEL[i.role] ?? i.role}</td>
                        <td>{i.invited_by_email ?? <span className="muted">—</span>}</td>
                        <td>{formatDateTime(i.expires_at)}</td>
                        <td className="cell-actions">
                          <Button size="sm" variant="ghost" className="text-danger" aria-label={`Revoke the invitation to ${i.email}`} onClick={() => setToRevoke(i)}>
                            Revoke
                          </Button>
                        </td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              </div>
            )}
          </Card>
        )}
      </div>

      <ConfirmDialog
        open={toRemove !== null}
        title="Remove member?"
        description={toRemove ? `${toRemove.email} loses access to this workspace, and the API keys they created here are revoked at once.` : ''}
        confirmLabel="Remove member"
        onConfirm={() => (toRemove ? remove(toRemove) : undefined)}
        onClose={() => setToRemove(null)}
      />
      <ConfirmDialog
        open={leaving}
        title="Leave workspace?"
        description="You lose access to this workspace, and the API keys you created here are revoked at once."
        confirmLabel="Leave"
        onConfirm={leave}
        onClose={() => setLeaving(false)}
      />
      <ConfirmDialog
        open={toRevoke !== null}
        title="Revoke invitation?"
        description={toRevoke ? `The link sent to ${toRevoke.email} stops working.` : ''}
        confirmLabel="Revoke invitation"
        onConfirm={() => (toRevoke ? revoke(toRevoke) : undefined)}
        onClose={() => setToRevoke(null)}
      />
    </>
  );
}

function InviteCard({
  workspaceId,
  myRole,
  onInvited,
}: {
  workspaceId: string;
  myRole: string | undefined;
  onInvited: (invitation: Invitation) => void;
}) {
  const [email, setEmail] = useState('');
  const [role, setRole] = useState<Role>('member');
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [busy, setBusy] = useState(false);

  async function onSubmit(event: FormEvent) {
    event.preventDefault();
    const problem = validateInviteEmail(email);
    setErrors(problem ? { email: problem } : {});
    if (problem) return;
    setBusy(true);
    try {
      const created = await invite(workspaceId, email.trim(), role);
      onInvited(created);
      setEmail('');
      toast.success(
        created.delivery === 'sent'
          ? `Invitation sent to ${created.email}.`
          : `Invitation created for ${created.email}; no mail server is set up, so its link is in the admin API's log.`,
      );
    } catch (err) {
      setErrors(fieldErrors(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <Card title="Invite someone" description="They get a link by email, valid for 7 days, and join once they sign in with that address.">
      <form onSubmit={onSubmit} noValidate className="form form-inline">
        <TextField label="Email" type="email" value={email} onChange={(e) => setEmail(e.target.value)} error={errors.email} />
        <SelectField label="Role" value={role} onChange={(e) => setRole(e.target.value as Role)} error={errors.role} hint={ROLE_HELP[role]}>
          {assignableRoles(myRole).map((r) => (
            <option key={r} value={r}>
              {ROLE_LABEL[r]}
            </option>
          ))}
        </SelectField>
        <Button type="submit" variant="primary" busy={busy}>
          Send invitation
        </Button>
      </form>
    </Card>
  );
}
