export interface Meta {
  /** OpenAI-compatible base URL of the gateway, without /v1. */
  gateway_url: string;
}

export const KEY_PLACEHOLDER = 'YOUR_PERPETUO_API_KEY';
export const GATEWAY_PLACEHOLDER = 'http://YOUR-GATEWAY-HOST';
export const EXAMPLE_MODEL = 'gpt-4o-mini';
