import { describe, expect, it } from 'vitest';
import { EMPTY_FILTERS, filtersFromParams, filtersToParams, filtersToQuery, pageCount, validateFilters } from './schema';

describe('log filters', () => {
  it('validates status codes and time ranges', () => {
    expect(validateFilters(EMPTY_FILTERS)).toEqual({});
    expect(validateFilters({ ...EMPTY_FILTERS, status: '20' }).status).toBeDefined();
    expect(validateFilters({ ...EMPTY_FILTERS, status: '700' }).status).toBeDefined();
    expect(validateFilters({ ...EMPTY_FILTERS, status: '429' })).toEqual({});
    expect(validateFilters({ ...EMPTY_FILTERS, from: '2025-03-05T10:00', to: '2025-03-05T09:00' }).to).toBe('Must be after the start.');
  });

  it('builds the API query with RFC 3339 times', () => {
    const query = filtersToQuery({ provider: 'p1', model: ' gpt-4o ', status: '500', from: '2025-03-05T10:00', to: '' }, 2, 25);
    expect(query).toEqual({
      page: 2,
      limit: 25,
      provider: 'p1',
      model: 'gpt-4o',
      status: '500',
      from: new Date('2025-03-05T10:00').toISOString(),
      to: undefined,
    });
  });

  it('round-trips through URL parameters', () => {
    const filters = { ...EMPTY_FILTERS, model: 'm', status: '200' };
    const params = new URLSearchParams(filtersToParams(filters, 3));
    expect(params.get('page')).toBe('3');
    expect(filtersFromParams(params)).toEqual(filters);
    expect(filtersToParams(EMPTY_FILTERS, 1)).toEqual({});
  });

  it('counts pages', () => {
    expect(pageCount(0, 25)).toBe(1);
    expect(pageCount(25, 25)).toBe(1);
    expect(pageCount(26, 25)).toBe(2);
  });
});
