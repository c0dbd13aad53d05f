export interface AuditEntry {
  id: string;
  created_at: string;
  actor_id: string | null;
  actor_email: string | null;
  ip: string | null;
  action: string;
  target_type: string | null;
  target_id: string | null;
  before: Record<string, unknown> | null;
  after: Record<string, unknown> | null;
}

export interface AuditPage {
  data: AuditEntry[];
  page: number;
  limit: number;
  total: number;
}

/** Resources whose every action the filter can select (`member.` selects them all). */
export const ACTION_FILTERS: { value: string; label: string }[] = [
  { value: '', label: 'All actions' },
  { value: 'provider.', label: 'Providers' },
  { value: 'api_key.', label: 'API keys' },
  { value: 'workspace.', label: 'Workspace' },
  { value: 'member.', label: 'Members' },
  { value: 'invitation.', label: 'Invitations' },
  { value: 'ownership.', label: 'Ownership' },
];

const ACTION_LABEL: Record<string, string> = {
  'provider.created': 'added a provider',
  'provider.updated': 'changed a provider',
  'provider.deleted': 'deleted a provider',
  'api_key.created': 'created an API key',
  'api_key.updated': 'changed an API key',
  'api_key.revoked': 'revoked an API key',
  'api_key.deleted': 'deleted an API key',
  'workspace.updated': 'changed the workspace',
  'workspace.deleted': 'deleted the workspace',
  'workspace.cache_purged': 'purged the response cache',
  'member.invited': 'invited a member',
  'member.role_changed': 'changed a role',
  'member.removed': 'removed a member',
  'member.left': 'left the workspace',
  'invitation.revoked': 'revoked an invitation',
  'invitation.accepted': 'accepted an invitation',
  'ownership.transferred': 'transferred ownership',
};

export function describeAction(action: string): string {
  return ACTION_LABEL[action] ?? action;
}

/** The fields that differ between before and after, as `field: old → new` lines. */
export function changes(entry: Pick<AuditEntry, 'before' | 'after'>): string[] {
  const before = entry.before ?? {};
  const after = entry.after ?? {};
  const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort();
  const show = (v: unknown) => (v === undefined ? '—' : typeof v === 'string' ? v : JSON.stringify(v));
  const lines: string[] = [];
  for (const key of keys) {
    if (key === 'created_at' || key === 'updated_at') continue;
    const a = before[key];
    const b = after[key];
    if (JSON.stringify(a) === JSON.stringify(b)) continue;
    if (entry.before && entry.after) lines.push(`${key}: ${show(a)} → ${show(b)}`);
    else lines.push(`${key}: ${show(entry.after ? b : a)}`);
  }
  return lines;
}
