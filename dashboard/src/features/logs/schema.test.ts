import { describe, expect, it } from 'vitest';
import { cursorFromParams, EMPTY_FILTERS, filtersFromParams, filtersToParams, filtersToQuery, validateFilters } from './schema';

describe('log filters', () => {
  it('validates status codes and time ranges', () => {
    expect(validateFilters(EMPTY_FILTERS)).toEqual({});
    expect(validateFilters({ ...EMPTY_FILTERS, status: '20' }).status).toBeDefined();
    expect(validateFilters({ ...EMPTY_FILTERS, status: '700' }).status).toBeDefined();
    expect(validateFilters({ ...EMPTY_FILTERS, status: '429' })).toEqual({});
    expect(validateFilters({ ...EMPTY_FILTERS, from: '2025-03-05T10:00', to: '2025-03-05T09:00' }).to).toBe('Must be after the start.');
  });

  it('builds the API query with RFC 3339 times', () => {
    const query = filtersToQuery({ provider: 'p1', model: ' gpt-4o ', status: '500', from: '2025-03-05T10:00', to: '' }, 'c-older', 25);
    expect(query).toEqual({
      cursor: 'c-older',
      limit: 25,
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
    const filters = { ...EMPTY_FILTERS, model: 'm', status: '200' };
    const params = new URLSearchParams(filtersToParams(filters, 'bwAAAA-_'));
    expect(params.get('cursor')).toBe('bwAAAA-_');
    expect(cursorFromParams(params)).toBe('bwAAAA-_');
    expect(filtersFromParams(params)).toEqual(filters);
    expect(filtersToParams(EMPTY_FILTERS)).toEqual({});
    expect(cursorFromParams(new URLSearchParams(filtersToParams(filters)))).toBeUndefined();
  });
});
