import { describe, expect, it } from 'vitest';
import {
  breakerView,
  emptyKeyRow,
  emptyProviderValues,
  formatShare,
  headroom,
  keysToInput,
  quotaText,
  suggestLabel,
  validateNewKey,
  nextPriority,
  parseModels,
  planMove,
  providerToValues,
  sortByPriority,
  validateProviderForm,
  valuesToInput,
  type Provider,
} from './schema';

function provider(id: string, priority: number, extra: Partial<Provider> = {}): Provider {
  return {
    id,
    kind: 'openai',
    name: `P ${id}`,
    base_url: null,
    key_last4: 'abcd',
    has_key: true,
    keys: [],
    quota: { rpm: null, tpm: null },
    weight: 1,
    priority,
    enabled: true,
    models: [],
    model_map: {},
    created_at: `2025-01-01T00:00:0${id.length}Z`,
    updated_at: '2025-01-01T00:00:00Z',
    ...extra,
  };
}

describe('parseModels', () => {
  it('splits on commas and newlines, trims and dedupes', () => {
    expect(parseModels(' gpt-4o, gpt-4o-mini ,,gpt-4o\nclaude ')).toEqual(['gpt-4o', 'gpt-4o-mini', 'claude']);
    expect(parseModels('   ')).toEqual([]);
  });
});

/** The pool of one key `key` (none when blank), as the form holds it. */
const withKey = (key: string) => [{ ...emptyKeyRow(), key }];

describe('validateProviderForm', () => {
  const valid = { ...emptyProviderValues(), name: 'Main', keys: withKey('sk-1') };

  it('accepts a minimal OpenAI entry', () => {
    expect(validateProviderForm(valid, 'create')).toEqual({});
  });

  it('requires name and key on create, not the key on edit', () => {
    const errors = validateProviderForm({ ...valid, name: ' ', keys: withKey('') }, 'create');
    expect(errors.name).toBe('Enter a name.');
    expect(errors.api_key).toBe('Enter the provider API key.');
    expect(validateProviderForm({ ...valid, keys: withKey('') }, 'edit')).toEqual({});
    const original = { kind: valid.kind, base_url: valid.baseUrl || null };
    expect(validateProviderForm({ ...valid, keys: withKey('') }, 'edit', original)).toEqual({});
    expect(
      validateProviderForm({ ...valid, keys: withKey(''), baseUrl: 'https://elsewhere.example.com/v1' }, 'edit', original).api_key,
    ).toMatch(/needs the API keys again/);
    expect(validateProviderForm({ ...valid, keys: withKey(''), kind: 'gemini' }, 'edit', original).api_key).toMatch(/API keys again/);
    expect(validateProviderForm({ ...valid, kind: 'gemini' }, 'edit', original)).toEqual({});
  });

  it('takes weights from 0 (standby) to 1000', () => {
    expect(validateProviderForm({ ...valid, weight: '0' }, 'create')).toEqual({});
    expect(validateProviderForm({ ...valid, weight: '1001' }, 'create').weight).toMatch(/0 \(standby\) to 1000/);
    expect(validateProviderForm({ ...valid, weight: '1.5' }, 'create').weight).toMatch(/whole number/);
  });

  it('lets an OpenAI-compatible server go without a key', () => {
    const local = { ...valid, kind: 'openai_compatible' as const, baseUrl: 'http://127.0.0.1:11434/v1', keys: withKey('') };
    expect(validateProviderForm(local, 'create')).toEqual({});
    const original = { kind: local.kind, base_url: local.baseUrl, has_key: false };
    // Without a key there is nothing to send elsewhere: it may move without one.
    expect(validateProviderForm({ ...local, baseUrl: 'http://127.0.0.1:8000/v1' }, 'edit', original)).toEqual({});
    expect(validateProviderForm({ ...local, kind: 'openai' }, 'edit', original).api_key).toBe('Enter the provider API key.');
  });

  it('requires a base URL only for openai_compatible', () => {
    expect(validateProviderForm({ ...valid, kind: 'openai_compatible' }, 'create').base_url).toMatch(/needs a base URL/);
    expect(validateProviderForm({ ...valid, kind: 'anthropic' }, 'create').base_url).toBeUndefined();
    expect(validateProviderForm({ ...valid, kind: 'openai_compatible', baseUrl: 'http://127.0.0.1:9/v1' }, 'create')).toEqual({});
  });

  it('checks URL shape and priority', () => {
    expect(validateProviderForm({ ...valid, baseUrl: 'api.example.com' }, 'create').base_url).toMatch(/full URL/);
    expect(validateProviderForm({ ...valid, baseUrl: 'ftp://x.com' }, 'create').base_url).toMatch(/http/);
    expect(validateProviderForm({ ...valid, baseUrl: 'https://u:p@x.com' }, 'create').base_url).toMatch(/credentials/);
    expect(validateProviderForm({ ...valid, baseUrl: 'https://x.com/v1?a=1' }, 'create').base_url).toMatch(/query/);
    expect(validateProviderForm({ ...valid, priority: '1.5' }, 'create').priority).toMatch(/whole number/);
    expect(validateProviderForm({ ...valid, priority: '2000000' }, 'create').priority).toMatch(/between/);
    expect(validateProviderForm({ ...valid, priority: '-5' }, 'create').priority).toBeUndefined();
  });

  it('checks model map rows and ignores blank ones', () => {
    const errors = validateProviderForm(
      {
        ...valid,
        modelMap: [
          { requested: 'a', served: 'b' },
          { requested: '', served: '' },
          { requested: 'c', served: '' },
          { requested: 'a', served: 'z' },
        ],
      },
      'create',
    );
    expect(errors['model_map.0']).toBeUndefined();
    expect(errors['model_map.1']).toBeUndefined();
    expect(errors['model_map.2']).toMatch(/model to send/);
    expect(errors['model_map.3']).toMatch(/mapped twice/);
  });
});

describe('valuesToInput', () => {
  it('builds a create body', () => {
    const input = valuesToInput(
      {
        ...emptyProviderValues(30),
        kind: 'openai_compatible',
        name: ' Local ',
        keys: withKey(' sk '),
        baseUrl: 'http://127.0.0.1:8080/v1 ',
        models: 'a, b',
        modelMap: [{ requested: 'gpt-4o', served: 'local-model' }, { requested: '', served: '' }],
      },
      'create',
    );
    expect(input).toEqual({
      kind: 'openai_compatible',
      name: 'Local',
      api_key: 'sk',
      base_url: 'http://127.0.0.1:8080/v1',
      priority: 30,
      weight: 1,
      enabled: true,
      models: ['a', 'b'],
      model_map: { 'gpt-4o': 'local-model' },
    });
  });

  it('keeps the key when blank on edit and clears a removed base URL', () => {
    const original = provider('p', 10, { base_url: 'https://proxy.example.com/v1', models: ['m'], model_map: { x: 'y' } });
    const values = { ...providerToValues(original), baseUrl: '' };
    expect(values.models).toBe('m');
    expect(values.modelMap).toEqual([{ requested: 'x', served: 'y' }]);
    const input = valuesToInput(values, 'edit', original);
    expect(input.api_key).toBeUndefined();
    expect(input.base_url).toBeNull();
    expect('base_url' in valuesToInput(providerToValues(provider('q', 1)), 'edit', provider('q', 1))).toBe(false);
  });
});

describe('ordering', () => {
  it('sorts by priority, then age', () => {
    const list = sortByPriority([provider('bb', 20), provider('a', 10), provider('c', 20)]);
    expect(list.map((p) => p.id)).toEqual(['a', 'c', 'bb']);
  });

  it('swaps neighbours with distinct priorities', () => {
    const list = [provider('a', 10), provider('b', 20), provider('c', 35)];
    expect(planMove(list, 1, 'up')).toEqual([
      { id: 'b', priority: 10 },
      { id: 'a', priority: 20 },
    ]);
    expect(planMove(list, 1, 'down')).toEqual([
      { id: 'b', priority: 35 },
      { id: 'c', priority: 20 },
    ]);
  });

  it('renumbers when priorities tie', () => {
    const list = [provider('a', 100), provider('bb', 100), provider('ccc', 100)];
    expect(planMove(list, 2, 'up')).toEqual([
      { id: 'a', priority: 10 },
      { id: 'ccc', priority: 20 },
      { id: 'bb', priority: 30 },
    ]);
  });

  it('does nothing at the edges', () => {
    const list = [provider('a', 1), provider('b', 2)];
    expect(planMove(list, 0, 'up')).toEqual([]);
    expect(planMove(list, 1, 'down')).toEqual([]);
  });

  it('puts new providers last', () => {
    expect(nextPriority([])).toBe(10);
    expect(nextPriority([provider('a', 5), provider('b', 40)])).toBe(50);
  });
});

describe('key pools in the form', () => {
  const base = { ...emptyProviderValues(), name: 'Pool' };
  const row = (key: string, label = '', weight = '1', enabled = true) => ({ key, label, weight, enabled });

  it('sends one plain key as api_key and anything more as keys', () => {
    expect(keysToInput([row(' sk-1 ')])).toEqual({ api_key: 'sk-1' });
    expect(keysToInput([row('')])).toEqual({});
    expect(keysToInput([row('sk-1', 'primary')])).toEqual({ keys: [{ key: 'sk-1', label: 'primary', weight: 1 }] });
    expect(keysToInput([row('sk-1'), row(''), row('sk-2', ' backup ', '0', false)])).toEqual({
      keys: [
        { key: 'sk-1', weight: 1 },
        { key: 'sk-2', label: 'backup', weight: 0, enabled: false },
      ],
    });
    const input = valuesToInput({ ...base, keys: [row('sk-a', 'a', '3'), row('sk-b', 'b')] }, 'create');
    expect(input.keys).toEqual([
      { key: 'sk-a', label: 'a', weight: 3 },
      { key: 'sk-b', label: 'b', weight: 1 },
    ]);
    expect(input.api_key).toBeUndefined();
  });

  it('checks each key row under the API names', () => {
    const errors = validateProviderForm(
      {
        ...base,
        keys: [row('sk-1', 'same'), row('sk 2'), row('sk-3', 'same'), row('sk-4', '', '1001'), row('', 'orphan')],
      },
      'create',
    );
    expect(errors['keys.0.label']).toBeUndefined();
    expect(errors['keys.1.key']).toMatch(/no spaces/);
    expect(errors['keys.2.label']).toMatch(/Another key/);
    expect(errors['keys.3.weight']).toMatch(/0 \(standby\) to 1000/);
    expect(errors['keys.4.key']).toMatch(/remove this row/);
    const many = Array.from({ length: 33 }, (_, i) => row(`sk-${i}`));
    expect(validateProviderForm({ ...base, keys: many }, 'create').keys).toMatch(/at most 32/);
    // Blank rows are left out and do not count as a key.
    expect(validateProviderForm({ ...base, keys: [row(''), row('')] }, 'create').api_key).toBe('Enter the provider API key.');
  });

  it('checks, sends and clears the quota', () => {
    expect(validateProviderForm({ ...base, keys: [row('k')], quotaRpm: '0' }, 'create')['quota.rpm']).toMatch(/from 1 to/);
    expect(validateProviderForm({ ...base, keys: [row('k')], quotaTpm: '1.5' }, 'create')['quota.tpm']).toMatch(/whole number/);
    expect(validateProviderForm({ ...base, keys: [row('k')], quotaRpm: '1000000001' }, 'create')['quota.rpm']).toBeDefined();
    expect(validateProviderForm({ ...base, keys: [row('k')], quotaRpm: '600', quotaTpm: '1000000' }, 'create')).toEqual({});
    expect(valuesToInput({ ...base, quotaRpm: '600' }, 'create').quota).toEqual({ rpm: 600, tpm: null });
    expect('quota' in valuesToInput(base, 'create')).toBe(false);
    const original = provider('q', 1, { quota: { rpm: 60, tpm: 5000 } });
    const values = providerToValues(original);
    expect([values.quotaRpm, values.quotaTpm]).toEqual(['60', '5000']);
    expect(valuesToInput({ ...values, quotaRpm: '' }, 'edit', original).quota).toEqual({ rpm: null, tpm: 5000 });
    expect(quotaText({ rpm: 600, tpm: 1_000_000 })).toBe('600 requests · 1,000,000 tokens per minute');
    expect(quotaText({ rpm: null, tpm: null })).toBe('None');
  });
});

describe('one key at a time', () => {
  const keys = [{ label: 'default' }, { label: 'key-2' }];

  it('suggests the first free key-<n> label', () => {
    expect(suggestLabel([])).toBe('key-1');
    expect(suggestLabel(keys)).toBe('key-3');
    expect(suggestLabel([{ label: 'key-2' }])).toBe('key-3');
  });

  it('checks a key to add', () => {
    expect(validateNewKey({ key: 'sk-x', label: 'backup', weight: '2' }, keys)).toEqual({});
    const errors = validateNewKey({ key: 'sk x', label: 'key-2', weight: '-1' }, keys);
    expect(errors.key).toMatch(/no spaces/);
    expect(errors.label).toMatch(/Another key/);
    expect(errors.weight).toMatch(/whole number/);
    expect(validateNewKey({ key: '', label: '', weight: '' }, keys)).toMatchObject({
      key: 'Enter the provider API key.',
      label: 'Enter a label.',
    });
    const full = Array.from({ length: 32 }, (_, i) => ({ label: `k${i}` }));
    expect(validateNewKey({ key: 'sk-x', label: 'more', weight: '1' }, full).key).toMatch(/at most 32/);
  });

  it('reads a key status for people', () => {
    const status = {
      requests_24h: 3,
      share: 0.75,
      breaker: 'half_open' as const,
      remaining_requests: 1200,
      remaining_tokens: 45000,
      reset_at: null,
      gateways: 2,
    };
    expect(breakerView(status)).toEqual({ label: 'Retrying', tone: 'warning' });
    expect(breakerView({ ...status, breaker: 'open' }).tone).toBe('danger');
    expect(breakerView({ ...status, breaker: null })).toEqual({ label: 'No report', tone: 'neutral' });
    expect(breakerView(undefined).label).toBe('No report');
    expect(formatShare(0.75)).toBe('75 %');
    expect(formatShare(0.034)).toBe('3.4 %');
    expect(formatShare(0)).toBe('0 %');
    expect(headroom(status)).toBe('1,200 requests · 45,000 tokens');
    expect(headroom({ ...status, remaining_requests: null, remaining_tokens: null })).toBe('—');
  });
});
