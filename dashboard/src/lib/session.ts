/** The session is kept for the browser tab only (sessionStorage). */

const TOKEN_KEY = 'perpetuo.token';
const REFRESH_KEY = 'perpetuo.refresh';
const WORKSPACE_KEY = 'perpetuo.workspace';

function storage(): Storage | null {
  try {
    return window.sessionStorage;
  } catch {
    return null;
  }
}

export function loadToken(): string | null {
  return storage()?.getItem(TOKEN_KEY) ?? null;
}

export function saveToken(token: string): void {
  storage()?.setItem(TOKEN_KEY, token);
}

export function loadRefreshToken(): string | null {
  return storage()?.getItem(REFRESH_KEY) ?? null;
}

/** Keeps both tokens of a session (after login, signup or a refresh). */
export function saveTokens(tokens: { token: string; refresh_token: string }): void {
  storage()?.setItem(TOKEN_KEY, tokens.token);
  storage()?.setItem(REFRESH_KEY, tokens.refresh_token);
}

export function loadWorkspaceId(): string | null {
  return storage()?.getItem(WORKSPACE_KEY) ?? null;
}

export function saveWorkspaceId(id: string): void {
  storage()?.setItem(WORKSPACE_KEY, id);
}

export function clearSession(): void {
  storage()?.removeItem(TOKEN_KEY);
  storage()?.removeItem(REFRESH_KEY);
  storage()?.removeItem(WORKSPACE_KEY);
}

/** Expiry of a JWT in epoch milliseconds, or null when it has none or cannot be read. */
export function tokenExpiry(token: string): number | null {
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  try {
    const base64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    const padded = base64 + '='.repeat((4 - (base64.length % 4)) % 4);
    const payload = JSON.parse(atob(padded)) as { exp?: unknown };
    return typeof payload.exp === 'number' ? payload.exp * 1000 : null;
  } catch {
    return null;
  }
}

export function isTokenExpired(token: string, now: number = Date.now()): boolean {
  const exp = tokenExpiry(token);
  return exp !== null && exp <= now;
}
