import { describe, expect, it } from 'vitest';
import {
  DASH,
  formatCompact,
  formatCost,
  formatDuration,
  formatPercent,
  formatRelative,
  formatTokens,
  localInputToRfc3339,
  statusTone,
  toDateTimeLocal,
} from './format';

describe('formatCost', () => {
  it('shows missing costs as a dash', () => {
    expect(formatCost(null)).toBe(DASH);
    expect(formatCost(undefined)).toBe(DASH);
    expect(formatCost(Number.NaN)).toBe(DASH);
  });
  it('shows dollars and cents from a dollar up', () => {
    expect(formatCost(0)).toBe('$0.00');
    expect(formatCost(1)).toBe('$1.00');
    expect(formatCost(12.345)).toBe('$12.35');
    expect(formatCost(1234.5)).toBe('$1,234.50');
  });
  it('keeps three significant digits below a dollar', () => {
    expect(formatCost(0.5)).toBe('$0.50');
    expect(formatCost(0.123)).toBe('$0.123');
    expect(formatCost(0.0123)).toBe('$0.0123');
    expect(formatCost(0.000123)).toBe('$0.000123');
    expect(formatCost(0.00012345)).toBe('$0.000123');
    expect(formatCost(0.0000015)).toBe('$0.0000015');
  });
  it('bounds tiny and negative values', () => {
    expect(formatCost(0.0000000042)).toBe('<$0.000001');
    expect(formatCost(-0.25)).toBe('-$0.25');
  });
});

describe('formatTokens and formatCompact', () => {
  it('groups thousands', () => {
    expect(formatTokens(0)).toBe('0');
    expect(formatTokens(1234567)).toBe('1,234,567');
    expect(formatTokens(null)).toBe(DASH);
  });
  it('abbreviates large numbers', () => {
    expect(formatCompact(950)).toBe('950');
    expect(formatCompact(1200)).toBe('1.2K');
    expect(formatCompact(1000)).toBe('1K');
    expect(formatCompact(3_456_789)).toBe('3.5M');
    expect(formatCompact(250_000)).toBe('250K');
    expect(formatCompact(7_000_000_000)).toBe('7B');
  });
});

describe('formatDuration', () => {
  it('uses ms, seconds and minutes', () => {
    expect(formatDuration(null)).toBe(DASH);
    expect(formatDuration(0)).toBe('0 ms');
    expect(formatDuration(850.4)).toBe('850 ms');
    expect(formatDuration(1250)).toBe('1.25 s');
    expect(formatDuration(12_500)).toBe('12.5 s');
    expect(formatDuration(125_000)).toBe('2m 05s');
  });
});

describe('formatPercent', () => {
  it('handles zero and small shares', () => {
    expect(formatPercent(1, 0)).toBe(DASH);
    expect(formatPercent(1, 4)).toBe('25%');
    expect(formatPercent(1, 200)).toBe('0.5%');
    expect(formatPercent(0, 10)).toBe('0%');
  });
});

describe('formatRelative', () => {
  const now = Date.parse('2025-03-05T12:00:00Z');
  it('describes past and future times', () => {
    expect(formatRelative('2025-03-05T11:59:30Z', now)).toBe('just now');
    expect(formatRelative('2025-03-05T11:55:00Z', now)).toBe('5 min ago');
    expect(formatRelative('2025-03-05T09:00:00Z', now)).toBe('3 h ago');
    expect(formatRelative('2025-03-03T12:00:00Z', now)).toBe('2 d ago');
    expect(formatRelative('2025-03-09T12:00:00Z', now)).toBe('in 4 d');
    expect(formatRelative(null, now)).toBe(DASH);
    expect(formatRelative('garbage', now)).toBe(DASH);
  });
});

describe('datetime-local conversion', () => {
  it('round-trips through local time', () => {
    const date = new Date(2025, 2, 5, 14, 30);
    const local = toDateTimeLocal(date);
    expect(local).toBe('2025-03-05T14:30');
    expect(localInputToRfc3339(local)).toBe(date.toISOString());
    expect(localInputToRfc3339('')).toBeUndefined();
    expect(localInputToRfc3339('nope')).toBeUndefined();
  });
});

describe('statusTone', () => {
  it('maps status classes', () => {
    expect(statusTone(200)).toBe('success');
    expect(statusTone(429)).toBe('warning');
    expect(statusTone(502)).toBe('danger');
    expect(statusTone(null)).toBe('neutral');
  });
});
