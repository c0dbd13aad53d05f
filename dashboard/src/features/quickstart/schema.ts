export interface Meta {
  /** OpenAI-compatible base URL of the gateway, without /v1. */
  gateway_url: string;
  /** Where a request's trace is shown, `{trace_id}` to fill in; null when not configured. */
  trace_url_template?: string | null;
}

export const KEY_PLACEHOLDER = 'YOUR_PERPETUO_API_KEY';
export const GATEWAY_PLACEHOLDER = 'http://YOUR-GATEWAY-HOST';
export const EXAMPLE_MODEL = 'gpt-4o-mini';
