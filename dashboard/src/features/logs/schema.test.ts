import { describe, expect, it } from 'vitest';
import {
  cursorFromParams,
  describeSkip,
  EMPTY_FILTERS,
  filtersFromParams,
  filtersToParams,
  filtersToQuery,
  validateFilters,
} from './schema';

describe('log filters', () => {
  it('validates status codes and time ranges', () => {
    expect(validateFilters(EMPTY_FILTERS)).toEqual({});
    expect(validateFilters({ ...EMPTY_FILTERS, status: '20' }).status).toBeDefined();
    expect(validateFilters({ ...EMPTY_FILTERS, status: '700' }).status).toBeDefined();
    expect(validateFilters({ ...EMPTY_FILTERS, status: '429' })).toEqual({});
    expect(validateFilters({ ...EMPTY_FILTERS, from: '2025-03-05T10:00', to: '2025-03-05T09:00' }).to).toBe('Must be after the start.');
  });

  it('takes an API key id, and nothing else, as the key filter', () => {
    expect(validateFilters({ ...EMPTY_FILTERS, api_key_id: '0190F3A2-7C1E-7D44-9A0B-2F5E8C1D3B6A' })).toEqual({});
    expect(validateFilters({ ...EMPTY_FILTERS, api_key_id: 'pp-abcd' }).api_key_id).toBeDefined();
    expect(validateFilters({ ...EMPTY_FILTERS, api_key_id: '0190f3a2-7c1e-7d44-9a0b' }).api_key_id).toBeDefined();
    expect(filtersToQuery(EMPTY_FILTERS).api_key_id).toBeUndefined();
  });

  it('builds the API query with RFC 3339 times', () => {
    const query = filtersToQuery(
      { api_key_id: ' 0190f3a2-7c1e-7d44-9a0b-2f5e8c1d3b6a ', provider: 'p1', model: ' gpt-4o ', status: '500', from: '2025-03-05T10:00', to: '' },
      'c-older',
      25,
    );
    expect(query).toEqual({
      cursor: 'c-older',
      limit: 25,
      api_key_id: '0190f3a2-7c1e-7d44-9a0b-2f5e8c1d3b6a',
      provider: 'p1',
      model: 'gpt-4o',
      status: '500',
      from: new Date('2025-03-05T10:00').toISOString(),
      to: undefined,
    });
  });

  it('asks for the newest page without a cursor', () => {
    expect(filtersToQuery(EMPTY_FILTERS).cursor).toBeUndefined();
    expect(filtersToQuery(EMPTY_FILTERS, '').cursor).toBeUndefined();
  });

  it('round-trips through URL parameters, with the cursor of the page shown', () => {
    const filters = { ...EMPTY_FILTERS, api_key_id: '0190f3a2-7c1e-7d44-9a0b-2f5e8c1d3b6a', model: 'm', status: '200' };
    const params = new URLSearchParams(filtersToParams(filters, 'bwAAAA-_'));
    expect(params.get('cursor')).toBe('bwAAAA-_');
    expect(cursorFromParams(params)).toBe('bwAAAA-_');
    expect(filtersFromParams(params)).toEqual(filters);
    expect(filtersToParams(EMPTY_FILTERS)).toEqual({});
    expect(cursorFromParams(new URLSearchParams(filtersToParams(filters)))).toBeUndefined();
  });
});

describe('skipped routes', () => {
  it('reads an entry or one of its keys, and why', () => {
    expect(describeSkip({ entry: 'azure', key: null, reason: 'quota' })).toBe('azure: out of its rate limit or quota');
    expect(describeSkip({ entry: 'oai', key: null, reason: 'weight' })).toBe('oai: another entry of its priority served first');
    expect(describeSkip({ entry: 'oai', key: null, reason: 'something-new' })).toBe('oai: something-new');
  });
});
