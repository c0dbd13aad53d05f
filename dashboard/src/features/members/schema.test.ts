import { describe, expect, it } from 'vitest';
import { assignableRoles, atLeast, can, mayManageMember, revokedKeysMessage, roleChangedMessage, validateInviteEmail } from './schema';

describe('roles', () => {
  it('orders roles from viewer to owner', () => {
    expect(atLeast('owner', 'admin')).toBe(true);
    expect(atLeast('admin', 'admin')).toBe(true);
    expect(atLeast('member', 'admin')).toBe(false);
    expect(atLeast('viewer', 'member')).toBe(false);
    expect(atLeast('stranger', 'viewer')).toBe(false);
    expect(atLeast(undefined, 'viewer')).toBe(false);
  });

  it('gives each role what the server allows it', () => {
    const table: [string, string[]][] = [
      ['viewer', []],
      ['member', ['viewProviders', 'viewKeys', 'createKeys']],
      ['admin', ['viewProviders', 'viewKeys', 'createKeys', 'manageProviders', 'manageAnyKey', 'editWorkspace', 'purgeCache', 'manageMembers', 'viewAudit']],
      [
        'owner',
        ['viewProviders', 'viewKeys', 'createKeys', 'manageProviders', 'manageAnyKey', 'editWorkspace', 'purgeCache', 'manageMembers', 'viewAudit', 'deleteWorkspace', 'transferOwnership'],
      ],
    ];
    const all = ['viewProviders', 'manageProviders', 'viewKeys', 'createKeys', 'manageAnyKey', 'editWorkspace', 'purgeCache', 'manageMembers', 'viewAudit', 'deleteWorkspace', 'transferOwnership'] as const;
    for (const [role, allowed] of table) {
      for (const p of all) expect(can(role, p), `${role} ${p}`).toBe(allowed.includes(p));
    }
  });

  it('lets admins manage members below owner and owners everyone', () => {
    expect(assignableRoles('owner')).toEqual(['viewer', 'member', 'admin', 'owner']);
    expect(assignableRoles('admin')).toEqual(['viewer', 'member', 'admin']);
    expect(assignableRoles('member')).toEqual([]);
    expect(mayManageMember('admin', 'member')).toBe(true);
    expect(mayManageMember('admin', 'owner')).toBe(false);
    expect(mayManageMember('owner', 'owner')).toBe(true);
    expect(mayManageMember('member', 'viewer')).toBe(false);
  });

  it('says which keys went with a removed member', () => {
    expect(revokedKeysMessage('a@x.io', { user_id: 'u', revoked_api_keys: [] })).toBe('a@x.io was removed. They had no API keys here.');
    expect(
      revokedKeysMessage('a@x.io', {
        user_id: 'u',
        revoked_api_keys: [
          { id: '1', name: 'ci', prefix: 'pp-1' },
          { id: '2', name: 'prod', prefix: 'pp-2' },
        ],
      }),
    ).toBe('a@x.io was removed; their 2 API keys “ci”, “prod” were revoked.');
  });

  it('says which keys went with a member made viewer', () => {
    const bo = { user_id: 'u', email: 'bo@x.io', joined_at: '2025-01-01T00:00:00Z' };
    expect(roleChangedMessage('bo@x.io', { ...bo, role: 'admin' })).toBe('bo@x.io is now admin.');
    expect(roleChangedMessage('bo@x.io', { ...bo, role: 'viewer', revoked_api_keys: [] })).toBe('bo@x.io is now viewer.');
    expect(roleChangedMessage('bo@x.io', { ...bo, role: 'viewer', revoked_api_keys: [{ id: '1', name: 'ci', prefix: 'pp-1' }] })).toBe(
      'bo@x.io is now viewer; their API key “ci” was revoked.',
    );
  });

  it('checks an invited address', () => {
    expect(validateInviteEmail('')).toBe('Enter an email address.');
    expect(validateInviteEmail('nope')).toBe('Enter a valid email address.');
    expect(validateInviteEmail(' b@example.com ')).toBeUndefined();
  });
});
