/**
 * Roles and what each may do, mirroring the admin API's access table
 * (admin-api/src/access.rs). The dashboard hides or disables what a role may not do;
 * the server still refuses it.
 */
export type Role = 'viewer' | 'member' | 'admin' | 'owner';

/** From least to most power. */
export const ROLES: readonly Role[] = ['viewer', 'member', 'admin', 'owner'];

export const ROLE_LABEL: Record<Role, string> = {
  viewer: 'Viewer',
  member: 'Member',
  admin: 'Admin',
  owner: 'Owner',
};

export const ROLE_HELP: Record<Role, string> = {
  viewer: 'Reads logs and usage.',
  member: 'Also sees providers and creates and manages their own API keys.',
  admin: 'Also manages providers, every API key, limits and members below owner.',
  owner: 'Everything, including deleting the workspace and transferring ownership.',
};

function rank(role: string | undefined | null): number {
  return ROLES.indexOf(role as Role);
}

export function atLeast(role: string | undefined | null, least: Role): boolean {
  const r = rank(role);
  return r >= 0 && r >= rank(least);
}

/** The least role of each thing the dashboard offers. */
export const NEEDS = {
  viewProviders: 'member',
  manageProviders: 'admin',
  viewKeys: 'member',
  createKeys: 'member',
  manageAnyKey: 'admin',
  editWorkspace: 'admin',
  purgeCache: 'admin',
  manageMembers: 'admin',
  viewAudit: 'admin',
  deleteWorkspace: 'owner',
  transferOwnership: 'owner',
} as const satisfies Record<string, Role>;

export type Permission = keyof typeof NEEDS;

export function can(role: string | undefined | null, permission: Permission): boolean {
  return atLeast(role, NEEDS[permission]);
}

/** Roles `role` may give to others: admins up to admin, owners any. */
export function assignableRoles(role: string | undefined | null): Role[] {
  if (role === 'owner') return [...ROLES];
  if (role === 'admin') return ['viewer', 'member', 'admin'];
  return [];
}

/** Whether `me` may change or remove a member whose role is `theirs`. */
export function mayManageMember(me: string | undefined | null, theirs: string): boolean {
  if (!can(me, 'manageMembers')) return false;
  return theirs !== 'owner' || me === 'owner';
}

export interface Member {
  user_id: string;
  email: string;
  role: Role;
  joined_at: string;
}

export interface Invitation {
  id: string;
  email: string;
  role: Role;
  invited_by: string | null;
  invited_by_email: string | null;
  created_at: string;
  expires_at: string;
}

export interface CreatedInvitation extends Invitation {
  /** `sent` by email, or `logged` when the server has no SMTP server. */
  delivery: 'sent' | 'logged';
}

/** An API key revoked because its creator left or became a viewer. */
export interface RevokedKey {
  id: string;
  name: string;
  prefix: string;
}

export interface RemovedMember {
  user_id: string;
  revoked_api_keys: RevokedKey[];
  /** The pending invitations the member had sent, revoked with them. */
  revoked_invitations?: string[];
}

/** `PUT …/members/{uid}`: a viewer holds no keys, so a member made viewer loses theirs. */
export interface UpdatedMember extends Member {
  revoked_api_keys?: RevokedKey[];
}

const EMAIL_PATTERN = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

export function validateInviteEmail(email: string): string | undefined {
  const trimmed = email.trim();
  if (!trimmed) return 'Enter an email address.';
  if (!EMAIL_PATTERN.test(trimmed)) return 'Enter a valid email address.';
  return undefined;
}

/** The sentence that tells an admin which keys went with a removed member. */
function revokedList(keys: RevokedKey[]): string {
  const n = keys.length;
  const names = keys.map((k) => `“${k.name}”`).join(', ');
  return `${n === 1 ? 'their API key' : `their ${n} API keys`} ${names} ${n === 1 ? 'was' : 'were'} revoked`;
}

export function roleChangedMessage(email: string, updated: UpdatedMember): string {
  const now = `${email} is now ${ROLE_LABEL[updated.role].toLowerCase()}`;
  const revoked = updated.revoked_api_keys ?? [];
  return revoked.length === 0 ? `${now}.` : `${now}; ${revokedList(revoked)}.`;
}

export function revokedKeysMessage(email: string, removed: RemovedMember): string {
  if (removed.revoked_api_keys.length === 0) return `${email} was removed. They had no API keys here.`;
  return `${email} was removed; ${revokedList(removed.revoked_api_keys)}.`;
}
