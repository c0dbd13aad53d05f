import { describe, expect, it } from 'vitest';
import { curlSnippet, openaiBaseUrl, pythonSnippet } from './snippets';

describe('quickstart snippets', () => {
  it('derives the /v1 base URL', () => {
    expect(openaiBaseUrl('http://127.0.0.1:8000')).toBe('http://127.0.0.1:8000/v1');
    expect(openaiBaseUrl('https://gw.example.com/')).toBe('https://gw.example.com/v1');
    expect(openaiBaseUrl('https://gw.example.com/v1')).toBe('https://gw.example.com/v1');
    expect(openaiBaseUrl('')).toBe('http://YOUR-GATEWAY-HOST/v1');
  });

  it('embeds the key when there is one, a placeholder otherwise', () => {
    const withKey = curlSnippet('http://127.0.0.1:8000', 'pk_live_123');
    expect(withKey).toContain('curl http://127.0.0.1:8000/v1/chat/completions');
    expect(withKey).toContain('Authorization: Bearer pk_live_123');
    expect(withKey).toContain('"model":"gpt-4o-mini"');
    expect(curlSnippet('http://x', null)).toContain('Bearer YOUR_PERPETUO_API_KEY');

    const py = pythonSnippet('http://127.0.0.1:8000');
    expect(py).toContain('base_url="http://127.0.0.1:8000/v1"');
    expect(py).toContain('api_key="YOUR_PERPETUO_API_KEY"');
    expect(py).toContain('client.chat.completions.create(');
  });
});
