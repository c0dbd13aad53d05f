import { render, screen } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it } from 'vitest';
import type { ApiKey } from '../../api-keys/schema';
import { EMPTY_FILTERS, KEY_PICKER_MAX, type LogFilters as Filters } from '../schema';
import { LogFilters } from './log-filters';

function key(n: number, extra: Partial<ApiKey> = {}): ApiKey {
  return {
    id: `0190f3a2-7c1e-7d44-9a0b-${String(n).padStart(12, '0')}`,
    name: `key-${n}`,
    prefix: `pp-${n}`,
    created_at: '2025-01-01T00:00:00Z',
    last_used_at: null,
    revoked_at: null,
    expires_at: null,
    ...extra,
  };
}

function setup(apiKeys: ApiKey[], value: Filters = EMPTY_FILTERS) {
  const applied: Filters[] = [];
  render(<LogFilters value={value} providers={[]} apiKeys={apiKeys} onApply={(f) => applied.push(f)} />);
  return applied;
}

describe('log filters: API key', () => {
  it('picks a key by its name and applies its id', async () => {
    const keys = [key(1, { label: 'Nightly jobs' }), key(2, { revoked_at: '2025-02-01T00:00:00Z' })];
    const applied = setup(keys);
    const user = userEvent.setup();
    const picker = screen.getByLabelText('API key') as HTMLSelectElement;
    const options = Array.from(picker.options).map((o) => o.textContent);
    expect(options).toEqual(['All keys', 'key-1 (pp-1…) · Nightly jobs', 'key-2 (pp-2…) (revoked)']);
    await user.selectOptions(picker, keys[1].id);
    await user.click(screen.getByRole('button', { name: 'Apply filters' }));
    expect(applied).toEqual([{ ...EMPTY_FILTERS, api_key_id: keys[1].id }]);
  });

  it('keeps a filtered key that is no longer in the list (deleted) as an option', () => {
    const gone = key(9).id;
    setup([key(1)], { ...EMPTY_FILTERS, api_key_id: gone });
    const picker = screen.getByLabelText('API key') as HTMLSelectElement;
    expect(picker.value).toBe(gone);
  });

  it('takes a typed id past the picker size, and refuses what is not one', async () => {
    const many = Array.from({ length: KEY_PICKER_MAX + 1 }, (_, i) => key(i));
    const applied = setup(many);
    const user = userEvent.setup();
    expect(screen.queryByRole('combobox', { name: 'API key' })).toBeNull();
    const field = screen.getByLabelText('API key id');
    await user.type(field, 'pp-1234');
    await user.click(screen.getByRole('button', { name: 'Apply filters' }));
    expect(screen.getByRole('alert').textContent).toMatch(/Use an API key id/);
    expect(applied).toEqual([]);
    await user.clear(field);
    await user.type(field, many[7].id);
    await user.click(screen.getByRole('button', { name: 'Apply filters' }));
    expect(applied).toEqual([{ ...EMPTY_FILTERS, api_key_id: many[7].id }]);
  });
});
