import { describe, expect, it } from 'vitest';
import { changes, describeAction } from './schema';

describe('audit entries', () => {
  it('lists only the fields that changed', () => {
    expect(
      changes({
        before: { name: 'main', priority: 100, updated_at: 'a', models: [] },
        after: { name: 'main', priority: 7, updated_at: 'b', models: ['gpt-4o'] },
      }),
    ).toEqual(['models: [] → ["gpt-4o"]', 'priority: 100 → 7']);
  });

  it('shows a creation or a deletion by its one side', () => {
    expect(changes({ before: null, after: { email: 'b@example.com', role: 'viewer' } })).toEqual(['email: b@example.com', 'role: viewer']);
    expect(changes({ before: { name: 'old' }, after: null })).toEqual(['name: old']);
  });

  it('names actions in words and keeps unknown ones', () => {
    expect(describeAction('member.invited')).toBe('invited a member');
    expect(describeAction('something.new')).toBe('something.new');
  });
});
