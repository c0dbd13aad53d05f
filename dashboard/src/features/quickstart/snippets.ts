import { EXAMPLE_MODEL, GATEWAY_PLACEHOLDER, KEY_PLACEHOLDER } from './schema';

/** The gateway's OpenAI-compatible base URL ("…/v1") from the configured gateway URL. */
export function openaiBaseUrl(gatewayUrl: string | null | undefined): string {
  const root = (gatewayUrl ?? '').trim().replace(/\/+$/, '') || GATEWAY_PLACEHOLDER;
  return root.endsWith('/v1') ? root : `${root}/v1`;
}

export function curlSnippet(gatewayUrl: string | null | undefined, apiKey?: string | null, model = EXAMPLE_MODEL): string {
  const key = apiKey || KEY_PLACEHOLDER;
  const body = JSON.stringify({ model, messages: [{ role: 'user', content: 'Hello!' }] });
  return [
    `curl ${openaiBaseUrl(gatewayUrl)}/chat/completions \\`,
    `  -H "Authorization: Bearer ${key}" \\`,
    `  -H "Content-Type: application/json" \\`,
    `  -d '${body}'`,
  ].join('\n');
}

export function pythonSnippet(gatewayUrl: string | null | undefined, apiKey?: string | null, model = EXAMPLE_MODEL): string {
  const key = apiKey || KEY_PLACEHOLDER;
  return [
    '# pip install openai',
    'from openai import OpenAI',
    '',
    'client = OpenAI(',
    `    base_url="${openaiBaseUrl(gatewayUrl)}",`,
    `    api_key="${key}",`,
    ')',
    '',
    'response = client.chat.completions.create(',
    `    model="${model}",`,
    '    messages=[{"role": "user", "content": "Hello!"}],',
    ')',
    'print(response.choices[0].message.content)',
  ].join('\n');
}
