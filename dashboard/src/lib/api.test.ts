import { describe, expect, it, vi } from 'vitest';
import { ApiClient, ApiError, buildQuery, cleanFieldMessage, describeError, fieldErrors, parseErrorResponse } from './api';

function jsonResponse(status: number, body: unknown): Response {
  return new Response(body === undefined ? null : JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json' },
  });
}

function client(fetchImpl: typeof fetch, token: string | null = 'tok', extra = {}) {
  const onError = vi.fn();
  const onUnauthorized = vi.fn();
  const c = new ApiClient({ fetch: fetchImpl, getToken: () => token, onError, onUnauthorized, ...extra });
  return { c, onError, onUnauthorized };
}

describe('parseErrorResponse', () => {
  it('reads the API error shape with field errors', () => {
    const err = parseErrorResponse(
      400,
      JSON.stringify({ error: { code: 'validation_error', message: 'name: required', fields: { name: 'required', bad: 3 } } }),
    );
    expect(err).toBeInstanceOf(ApiError);
    expect(err.status).toBe(400);
    expect(err.code).toBe('validation_error');
    expect(err.message).toBe('name: required');
    expect(err.fields).toEqual({ name: 'required' });
  });

  it('falls back to a readable message for non-JSON bodies', () => {
    const err = parseErrorResponse(502, '<html>Bad gateway</html>');
    expect(err.code).toBe('http_502');
    expect(err.message).toBe('The server is unreachable.');
    expect(err.fields).toEqual({});
  });

  it('handles empty bodies and unknown statuses', () => {
    expect(parseErrorResponse(418, '').message).toBe('Request failed (418).');
    expect(parseErrorResponse(404, '{"error":"nope"}').code).toBe('http_404');
  });
});

describe('cleanFieldMessage', () => {
  it('drops a repeated field name and capitalises', () => {
    expect(cleanFieldMessage('base_url', 'base_url must use https')).toBe('Must use https');
    expect(cleanFieldMessage('from', 'from: must be before to')).toBe('Must be before to');
    expect(cleanFieldMessage('name', 'must not be empty')).toBe('Must not be empty');
    expect(cleanFieldMessage('name', 'name')).toBe('Name');
  });
});

describe('describeError', () => {
  it('capitalises plain messages and lists field errors', () => {
    expect(describeError(new ApiError(401, 'invalid_credentials', 'email or password is incorrect'))).toBe('Email or password is incorrect');
    expect(
      describeError(
        new ApiError(400, 'validation_error', 'base_url: base_url must use https', {
          base_url: 'base_url must use https',
          api_key: 'must not be empty',
        }),
      ),
    ).toBe('Base URL: must use https · API key: must not be empty');
  });
});

describe('buildQuery', () => {
  it('drops empty values and encodes the rest', () => {
    expect(buildQuery({ page: 2, model: 'gpt 4', status: undefined, from: '', to: null })).toBe('?page=2&model=gpt+4');
    expect(buildQuery({})).toBe('');
    expect(buildQuery(undefined)).toBe('');
  });
});

describe('ApiClient', () => {
  it('sends the bearer token and a JSON body', async () => {
    const fetchMock = vi.fn(async () => jsonResponse(201, { id: 'w1' }));
    const { c } = client(fetchMock as unknown as typeof fetch, 'secret-token');
    const result = await c.post<{ id: string }>('/workspaces', { name: 'Team' });
    expect(result).toEqual({ id: 'w1' });
    const [url, init] = fetchMock.mock.calls[0] as unknown as [string, RequestInit];
    expect(url).toBe('/workspaces');
    expect(init.method).toBe('POST');
    const headers = init.headers as Record<string, string>;
    expect(headers.Authorization).toBe('Bearer secret-token');
    expect(headers['Content-Type']).toBe('application/json');
    expect(init.body).toBe(JSON.stringify({ name: 'Team' }));
  });

  it('omits the token when auth is off or there is none', async () => {
    const fetchMock = vi.fn(async () => jsonResponse(200, { ok: true }));
    const { c } = client(fetchMock as unknown as typeof fetch, 'tok');
    await c.post('/auth/login', { email: 'a@b.c', password: 'x' }, { auth: false });
    const headers = (fetchMock.mock.calls[0] as unknown as [string, RequestInit])[1].headers as Record<string, string>;
    expect(headers.Authorization).toBeUndefined();
  });

  it('adds the query string', async () => {
    const fetchMock = vi.fn(async () => jsonResponse(200, { data: [] }));
    const { c } = client(fetchMock as unknown as typeof fetch);
    await c.get('/workspaces/w/logs', { query: { page: 1, limit: 25, status: 500 } });
    expect((fetchMock.mock.calls[0] as unknown as [string])[0]).toBe('/workspaces/w/logs?page=1&limit=25&status=500');
  });

  it('returns undefined for 204', async () => {
    const { c } = client((async () => new Response(null, { status: 204 })) as unknown as typeof fetch);
    await expect(c.delete('/workspaces/w/providers/p')).resolves.toBeUndefined();
  });

  it('reports server errors once, on the error path, and rejects with field errors', async () => {
    const { c, onError, onUnauthorized } = client((async () =>
      jsonResponse(409, { error: { code: 'conflict', message: 'email already registered', fields: { email: 'already registered' } } })) as unknown as typeof fetch);
    const err = await c.post('/auth/signup', {}).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).status).toBe(409);
    expect(fieldErrors(err)).toEqual({ email: 'Already registered' });
    expect(onError).toHaveBeenCalledTimes(1);
    expect(onError.mock.calls[0][0].message).toBe('email already registered');
    expect(onUnauthorized).not.toHaveBeenCalled();
  });

  it('ends the session on a 401 to an authenticated request, without a toast', async () => {
    const { c, onError, onUnauthorized } = client((async () =>
      jsonResponse(401, { error: { code: 'token_expired', message: 'authentication required' } })) as unknown as typeof fetch);
    const err = await c.get('/auth/me').catch((e: unknown) => e);
    expect((err as ApiError).status).toBe(401);
    expect((err as ApiError).handled).toBe(true);
    expect(onUnauthorized).toHaveBeenCalledTimes(1);
    expect(onError).not.toHaveBeenCalled();
  });

  it('treats a 401 without a token (wrong password) as an ordinary error', async () => {
    const { c, onError, onUnauthorized } = client(
      (async () => jsonResponse(401, { error: { code: 'invalid_credentials', message: 'wrong email or password' } })) as unknown as typeof fetch,
      null,
    );
    await expect(c.post('/auth/login', {}, { auth: false })).rejects.toMatchObject({ status: 401, message: 'wrong email or password' });
    expect(onUnauthorized).not.toHaveBeenCalled();
    expect(onError).toHaveBeenCalledTimes(1);
  });

  it('turns network failures into a network_error', async () => {
    const { c, onError } = client((async () => {
      throw new TypeError('Failed to fetch');
    }) as unknown as typeof fetch);
    await expect(c.get('/workspaces')).rejects.toMatchObject({ status: 0, code: 'network_error' });
    expect(onError).toHaveBeenCalledTimes(1);
  });

  it('does not report aborted requests', async () => {
    const { c, onError } = client((async () => {
      throw new DOMException('aborted', 'AbortError');
    }) as unknown as typeof fetch);
    await expect(c.get('/workspaces')).rejects.toMatchObject({ name: 'AbortError' });
    expect(onError).not.toHaveBeenCalled();
  });

  it('stays quiet when asked to', async () => {
    const { c, onError } = client((async () => jsonResponse(500, { error: { code: 'internal_error', message: 'internal error' } })) as unknown as typeof fetch);
    await expect(c.get('/workspaces', { silent: true })).rejects.toMatchObject({ status: 500 });
    expect(onError).not.toHaveBeenCalled();
  });
});

describe('ApiClient session refresh', () => {
  function sessionClient(routes: Record<string, (init: RequestInit) => Response>) {
    const tokens = { token: 'old-access', refresh: 'ppr-old' as string | null };
    const calls: { path: string; auth?: string; body?: unknown }[] = [];
    const fetchMock = vi.fn(async (input: RequestInfo | URL, init: RequestInit = {}) => {
      const path = String(input);
      const headers = (init.headers ?? {}) as Record<string, string>;
      calls.push({ path, auth: headers.Authorization, body: init.body ? JSON.parse(String(init.body)) : undefined });
      const handler = routes[path];
      return handler ? handler(init) : jsonResponse(404, { error: { code: 'not_found', message: 'not found' } });
    });
    const onError = vi.fn();
    const onUnauthorized = vi.fn();
    const onRefreshed = vi.fn((t: { token: string; refresh_token: string }) => {
      tokens.token = t.token;
      tokens.refresh = t.refresh_token;
    });
    const c = new ApiClient({
      fetch: fetchMock as unknown as typeof fetch,
      getToken: () => tokens.token,
      getRefreshToken: () => tokens.refresh,
      onRefreshed,
      onError,
      onUnauthorized,
    });
    return { c, calls, tokens, onError, onUnauthorized, onRefreshed };
  }

  const unauthorized = () => jsonResponse(401, { error: { code: 'invalid_token', message: 'token is invalid' } });
  const meFor = (good: string) => (init: RequestInit) =>
    (init.headers as Record<string, string>).Authorization === `Bearer ${good}` ? jsonResponse(200, { ok: true }) : unauthorized();

  it('refreshes once on a 401 and repeats the request with the new token', async () => {
    const { c, calls, tokens, onError, onUnauthorized, onRefreshed } = sessionClient({
      '/auth/me': meFor('new-access'),
      '/auth/refresh': () => jsonResponse(200, { token: 'new-access', refresh_token: 'ppr-new' }),
    });
    await expect(c.get('/auth/me')).resolves.toEqual({ ok: true });
    expect(calls.map((x) => x.path)).toEqual(['/auth/me', '/auth/refresh', '/auth/me']);
    expect(calls[1].auth).toBeUndefined();
    expect(calls[1].body).toEqual({ refresh_token: 'ppr-old' });
    expect(calls[2].auth).toBe('Bearer new-access');
    expect(onRefreshed).toHaveBeenCalledTimes(1);
    expect(tokens.refresh).toBe('ppr-new');
    expect(onUnauthorized).not.toHaveBeenCalled();
    expect(onError).not.toHaveBeenCalled();
  });

  it('shares one refresh between requests that fail together', async () => {
    const { c, calls } = sessionClient({
      '/a': meFor('new-access'),
      '/b': meFor('new-access'),
      '/auth/refresh': () => jsonResponse(200, { token: 'new-access', refresh_token: 'ppr-new' }),
    });
    await expect(Promise.all([c.get('/a'), c.get('/b')])).resolves.toEqual([{ ok: true }, { ok: true }]);
    expect(calls.filter((x) => x.path === '/auth/refresh')).toHaveLength(1);
  });

  it('ends the session when the refresh is refused, without a toast', async () => {
    const { c, calls, onError, onUnauthorized } = sessionClient({
      '/auth/me': unauthorized,
      '/auth/refresh': () => jsonResponse(401, { error: { code: 'invalid_refresh_token', message: 'refresh token is invalid' } }),
    });
    const err = await c.get('/auth/me').catch((e: unknown) => e);
    expect((err as ApiError).status).toBe(401);
    expect(calls.map((x) => x.path)).toEqual(['/auth/me', '/auth/refresh']);
    expect(onUnauthorized).toHaveBeenCalledTimes(1);
    expect(onError).not.toHaveBeenCalled();
  });

  it('does not loop when the repeated request is refused too', async () => {
    const { c, calls, onUnauthorized } = sessionClient({
      '/auth/me': unauthorized,
      '/auth/refresh': () => jsonResponse(200, { token: 'new-access', refresh_token: 'ppr-new' }),
    });
    await expect(c.get('/auth/me')).rejects.toMatchObject({ status: 401 });
    expect(calls.map((x) => x.path)).toEqual(['/auth/me', '/auth/refresh', '/auth/me']);
    expect(onUnauthorized).toHaveBeenCalledTimes(1);
  });

  it('without a refresh token, a 401 ends the session at once', async () => {
    const { c, calls, tokens, onUnauthorized } = sessionClient({ '/auth/me': unauthorized });
    tokens.refresh = null;
    await expect(c.get('/auth/me')).rejects.toMatchObject({ status: 401 });
    expect(calls.map((x) => x.path)).toEqual(['/auth/me']);
    expect(onUnauthorized).toHaveBeenCalledTimes(1);
  });

  it('logs out through POST /auth/logout with the access token, quietly', async () => {
    const { c, calls, onError, onUnauthorized } = sessionClient({
      '/auth/logout': () => new Response(null, { status: 204 }),
    });
    await c.logout();
    expect(calls).toEqual([{ path: '/auth/logout', auth: 'Bearer old-access', body: undefined }]);

    const failing = sessionClient({ '/auth/logout': () => jsonResponse(500, { error: { code: 'internal_error', message: 'x' } }) });
    await expect(failing.c.logout()).resolves.toBeUndefined();
    expect(failing.onError).not.toHaveBeenCalled();
    expect(onError).not.toHaveBeenCalled();
    expect(onUnauthorized).not.toHaveBeenCalled();
  });
});
