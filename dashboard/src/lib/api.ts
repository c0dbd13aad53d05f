/**
 * The single HTTP client for the admin API.
 *
 * Every request goes through `request`, which adds the bearer token, encodes
 * JSON bodies and query strings, and turns any failure into an `ApiError`.
 * Access tokens are short-lived: a 401 on an authenticated request first tries
 * `POST /auth/refresh` once (one refresh at a time, shared by every request
 * that needs it) and repeats the request with the new token. Failures are
 * reported on exactly one path: a 401 that a refresh cannot cure goes to the
 * unauthorized handler (which ends the session), every other failure goes to
 * the error handler (which shows a toast). Callers still get the rejected
 * promise so forms can place `fields` messages next to inputs.
 */

export interface ApiErrorBody {
  error: { code: string; message: string; fields?: Record<string, string> };
}

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly fields: Record<string, string>;
  /** True once the error was reported (toast or session end). */
  handled = false;

  constructor(status: number, code: string, message: string, fields: Record<string, string> = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.fields = fields;
  }
}

export type QueryValue = string | number | boolean | null | undefined;

export interface RequestOptions {
  body?: unknown;
  query?: Record<string, QueryValue>;
  signal?: AbortSignal;
  /** Send the bearer token (default true). */
  auth?: boolean;
  /** Do not report failures to the error handler (the caller shows them). */
  silent?: boolean;
}

/** The tokens of a session: a short-lived access token and its refresh token. */
export interface SessionTokens {
  token: string;
  refresh_token: string;
}

export interface ApiClientConfig {
  baseUrl?: string;
  fetch?: typeof fetch;
  getToken?: () => string | null;
  /** The refresh token of the session, if any. */
  getRefreshToken?: () => string | null;
  /** Receives the tokens of a successful refresh (they replace the old ones). */
  onRefreshed?: (tokens: SessionTokens) => void;
  onUnauthorized?: (error: ApiError) => void;
  onError?: (error: ApiError) => void;
}

const STATUS_TEXT: Record<number, string> = {
  400: 'The request was not valid.',
  403: 'You do not have access to this resource.',
  404: 'Not found.',
  409: 'This conflicts with an existing resource.',
  413: 'The request is too large.',
  422: 'Some fields are not valid.',
  429: 'Too many requests. Try again in a moment.',
  500: 'The server failed to handle the request.',
  502: 'The server is unreachable.',
  503: 'The service is unavailable. Try again in a moment.',
  504: 'The server took too long to answer.',
};

/** Turns an error response into an ApiError, whatever its body looks like. */
export function parseErrorResponse(status: number, text: string): ApiError {
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  if (isErrorBody(parsed)) {
    const { code, message, fields } = parsed.error;
    const cleanFields: Record<string, string> = {};
    if (fields && typeof fields === 'object') {
      for (const [key, value] of Object.entries(fields)) {
        if (typeof value === 'string') cleanFields[key] = value;
      }
    }
    return new ApiError(status, code, message || STATUS_TEXT[status] || `Request failed (${status}).`, cleanFields);
  }
  const message = STATUS_TEXT[status] ?? `Request failed (${status}).`;
  return new ApiError(status, `http_${status}`, message);
}

function isErrorBody(value: unknown): value is ApiErrorBody {
  if (!value || typeof value !== 'object') return false;
  const err = (value as { error?: unknown }).error;
  return (
    !!err &&
    typeof err === 'object' &&
    typeof (err as { code?: unknown }).code === 'string' &&
    typeof (err as { message?: unknown }).message === 'string'
  );
}

export function buildQuery(query: Record<string, QueryValue> | undefined): string {
  if (!query) return '';
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined || value === null || value === '') continue;
    params.set(key, String(value));
  }
  const text = params.toString();
  return text ? `?${text}` : '';
}

export function isAbortError(error: unknown): boolean {
  return error instanceof DOMException
    ? error.name === 'AbortError'
    : !!error && typeof error === 'object' && (error as { name?: string }).name === 'AbortError';
}

export class ApiClient {
  private config: ApiClientConfig;
  /** The refresh in flight, shared by every request that got a 401 meanwhile. */
  private refreshing: Promise<boolean> | null = null;

  constructor(config: ApiClientConfig = {}) {
    this.config = { ...config };
  }

  configure(patch: Partial<ApiClientConfig>): void {
    this.config = { ...this.config, ...patch };
  }

  async request<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    return this.send<T>(method, path, options, true);
  }

  /** Ends the session on the server; failures are not reported (the session ends anyway). */
  async logout(): Promise<void> {
    if (!this.config.getToken?.()) return;
    await this.send<void>('POST', '/auth/logout', { silent: true }, true, false).catch(() => undefined);
  }

  private async send<T>(
    method: string,
    path: string,
    options: RequestOptions,
    mayRefresh: boolean,
    mayEndSession = true,
  ): Promise<T> {
    const { body, query, signal, auth = true, silent = false } = options;
    const headers: Record<string, string> = { Accept: 'application/json' };
    const token = auth ? (this.config.getToken?.() ?? null) : null;
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';

    const doFetch = this.config.fetch ?? globalThis.fetch.bind(globalThis);
    const url = `${this.config.baseUrl ?? ''}${path}${buildQuery(query)}`;

    let response: Response;
    try {
      response = await doFetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
      });
    } catch (cause) {
      if (isAbortError(cause)) throw cause;
      const error = new ApiError(0, 'network_error', 'Could not reach the server. Check that it is running and try again.');
      this.report(error, silent);
      throw error;
    }

    if (response.ok) {
      if (response.status === 204) return undefined as T;
      const text = await response.text();
      if (!text) return undefined as T;
      try {
        return JSON.parse(text) as T;
      } catch {
        const error = new ApiError(response.status, 'invalid_response', 'The server sent a response that could not be read.');
        this.report(error, silent);
        throw error;
      }
    }

    const text = await response.text().catch(() => '');
    const error = parseErrorResponse(response.status, text);
    if (response.status === 401 && token) {
      // The access token expired or was revoked: a refresh may cure it, once.
      if (mayRefresh && (await this.refreshAfter(token))) {
        return this.send<T>(method, path, options, false, mayEndSession);
      }
      error.handled = true;
      if (mayEndSession) this.config.onUnauthorized?.(error);
      throw error;
    }
    this.report(error, silent);
    throw error;
  }

  get<T>(path: string, options?: RequestOptions) {
    return this.request<T>('GET', path, options);
  }
  post<T>(path: string, body?: unknown, options?: RequestOptions) {
    return this.request<T>('POST', path, { ...options, body });
  }
  put<T>(path: string, body?: unknown, options?: RequestOptions) {
    return this.request<T>('PUT', path, { ...options, body });
  }
  patch<T>(path: string, body?: unknown, options?: RequestOptions) {
    return this.request<T>('PATCH', path, { ...options, body });
  }
  delete<T = void>(path: string, options?: RequestOptions) {
    return this.request<T>('DELETE', path, options);
  }

  /**
   * Gets a new access token after `failedToken` was refused; resolves whether the
   * request is worth repeating. A token that changed meanwhile means another request
   * already refreshed.
   */
  private async refreshAfter(failedToken: string): Promise<boolean> {
    const current = this.config.getToken?.() ?? null;
    if (current && current !== failedToken) return true;
    if (!this.refreshing) {
      this.refreshing = this.refresh().finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  private async refresh(): Promise<boolean> {
    const refreshToken = this.config.getRefreshToken?.() ?? null;
    if (!refreshToken) return false;
    try {
      const tokens = await this.send<SessionTokens>(
        'POST',
        '/auth/refresh',
        { body: { refresh_token: refreshToken }, auth: false, silent: true },
        false,
      );
      if (!tokens?.token || !tokens.refresh_token) return false;
      this.config.onRefreshed?.(tokens);
      return true;
    } catch {
      return false;
    }
  }

  private report(error: ApiError, silent: boolean) {
    if (silent || error.handled) return;
    error.handled = true;
    this.config.onError?.(error);
  }
}

/** The application's client; wired to the session and the toaster in main.tsx. */
export const api = new ApiClient();

/** Encodes one path segment (ids come from the server, but stay safe). */
export function seg(value: string): string {
  return encodeURIComponent(value);
}

/** "base_url must use https" → "Must use https": the input's label already names the field. */
export function cleanFieldMessage(field: string, message: string): string {
  let text = message.trim();
  for (const prefix of [`${field}:`, `${field} `]) {
    if (text.startsWith(prefix)) {
      text = text.slice(prefix.length).trim();
      break;
    }
  }
  if (!text) text = message.trim();
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** Field errors of an ApiError, ready to show next to inputs ("must be…" → "Must be…"). */
export function fieldErrors(error: unknown): Record<string, string> {
  if (!(error instanceof ApiError)) return {};
  const out: Record<string, string> = {};
  for (const [field, raw] of Object.entries(error.fields)) {
    out[field] = cleanFieldMessage(field, raw);
  }
  return out;
}

function humanizeField(field: string): string {
  const words = field
    .split(/[_.\s]+/)
    .filter(Boolean)
    .map((w) => (['url', 'id', 'api'].includes(w.toLowerCase()) ? w.toUpperCase() : w));
  const text = words.join(' ');
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** The text of a notification for an ApiError: field by field for validation errors. */
export function describeError(error: ApiError): string {
  const fields = Object.entries(error.fields);
  if (fields.length > 0) {
    return fields
      .map(([field, message]) => {
        const clean = cleanFieldMessage(field, message);
        return `${humanizeField(field)}: ${clean.charAt(0).toLowerCase()}${clean.slice(1)}`;
      })
      .join(' · ');
  }
  const text = error.message.trim();
  return text.charAt(0).toUpperCase() + text.slice(1);
}

export function errorMessage(error: unknown): string {
  if (error instanceof ApiError) return describeError(error);
  if (error instanceof Error) return error.message;
  return 'Something went wrong.';
}
