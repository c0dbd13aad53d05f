import { render, screen } from '@testing-library/react';
import { describe, expect, it } from 'vitest';
import type { LogEntry } from '../schema';
import { LogDetail } from './log-detail';

const ENTRY: LogEntry = {
  id: '0190f3a2-7c1e-7d44-9a0b-2f5e8c1d3b6a',
  created_at: '2025-03-05T12:00:00Z',
  api_key_id: null,
  route: 'chat',
  provider_id: null,
  provider_name: null,
  provider_kind: null,
  model_requested: 'gpt-4o',
  model_served: 'gpt-4o',
  status: 200,
  error_kind: null,
  streamed: false,
  prompt_tokens: 10,
  completion_tokens: 5,
  total_tokens: 15,
  cost_usd: 0,
  usage_source: 'provider',
  latency_ms: 3,
  ttfb_ms: 2,
  attempts: [],
};

describe('log detail', () => {
  it('links the trace id through the configured template, and shows it bare without one', () => {
    const traced = { ...ENTRY, trace_id: '0af7651916cd43dd8448eb211c80319c' };
    const { unmount } = render(
      <LogDetail entry={traced} traceUrlTemplate="https://tempo.example/trace/{trace_id}?x=1" onClose={() => {}} />,
    );
    const link = screen.getByRole('link', { name: '0af7651916cd43dd8448eb211c80319c' });
    expect(link.getAttribute('href')).toBe('https://tempo.example/trace/0af7651916cd43dd8448eb211c80319c?x=1');
    unmount();
    render(<LogDetail entry={traced} onClose={() => {}} />);
    expect(screen.getByText('0af7651916cd43dd8448eb211c80319c')).toBeTruthy();
    expect(screen.queryByRole('link', { name: '0af7651916cd43dd8448eb211c80319c' })).toBeNull();
  });

  it('says a hit came from the cache and what it saved', () => {
    render(<LogDetail entry={{ ...ENTRY, cache: 'hit', cache_saved_usd: 0.0015 }} onClose={() => undefined} />);
    const dialog = screen.getByRole('dialog');
    expect(dialog.textContent).toContain('cache hit');
    expect(dialog.textContent).toContain('Hit: answered from the cache, no provider called');
    expect(dialog.textContent).toContain('Saved by the cache$0.0015');
  });

  it('names the pool key that served and what routing passed over', () => {
    render(
      <LogDetail
        entry={{
          ...ENTRY,
          provider_name: 'primary',
          provider_key_id: '0190f3a2-7c1e-7d44-9a0b-2f5e8c1d3b6b',
          provider_key_label: 'key-2',
          skipped: [
            { entry: 'azure', key: null, reason: 'quota' },
            { entry: 'primary', key: 'default', reason: 'breaker' },
          ],
        }}
        onClose={() => undefined}
      />,
    );
    const text = screen.getByRole('dialog').textContent;
    expect(text).toContain('Provider keykey-2');
    expect(text).toContain('azure: out of its rate limit or quota');
    expect(text).toContain('primary / default: its breaker was open');
  });

  it('says nothing of keys for a row without them', () => {
    render(<LogDetail entry={{ ...ENTRY, provider_key_label: null, skipped: null }} onClose={() => undefined} />);
    const text = screen.getByRole('dialog').textContent;
    expect(text).not.toContain('Provider key');
    expect(text).not.toContain('Skipped');
  });

  it('shows nothing of the cache for a request it did not see', () => {
    render(<LogDetail entry={{ ...ENTRY, cache: null }} onClose={() => undefined} />);
    expect(screen.getByRole('dialog').textContent).not.toMatch(/cache/i);
  });
});
