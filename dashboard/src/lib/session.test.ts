import { describe, expect, it } from 'vitest';
import {
  clearSession,
  isTokenExpired,
  loadRefreshToken,
  loadToken,
  loadWorkspaceId,
  saveToken,
  saveTokens,
  saveWorkspaceId,
  tokenExpiry,
} from './session';

function jwt(payload: object): string {
  const b64 = (o: object) => btoa(JSON.stringify(o)).replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
  return `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(payload)}.signature`;
}

describe('session storage', () => {
  it('keeps the token and workspace for the tab and clears both', () => {
    saveToken('abc');
    saveWorkspaceId('w1');
    expect(loadToken()).toBe('abc');
    expect(loadWorkspaceId()).toBe('w1');
    expect(window.sessionStorage.getItem('perpetuo.token')).toBe('abc');
    clearSession();
    expect(loadToken()).toBeNull();
    expect(loadWorkspaceId()).toBeNull();
  });

  it('keeps the refresh token with the session and clears it with the rest', () => {
    saveTokens({ token: 'access', refresh_token: 'ppr-1' });
    expect(loadToken()).toBe('access');
    expect(loadRefreshToken()).toBe('ppr-1');
    clearSession();
    expect(loadToken()).toBeNull();
    expect(loadRefreshToken()).toBeNull();
  });
});

describe('token expiry', () => {
  it('reads exp from the JWT payload', () => {
    expect(tokenExpiry(jwt({ sub: 'u', exp: 1_700_000_000 }))).toBe(1_700_000_000_000);
    expect(tokenExpiry(jwt({ sub: 'u' }))).toBeNull();
    expect(tokenExpiry('not-a-jwt')).toBeNull();
    expect(tokenExpiry('a.!!!.c')).toBeNull();
  });
  it('tells whether it has passed', () => {
    const token = jwt({ exp: 1000 });
    expect(isTokenExpired(token, 999_000)).toBe(false);
    expect(isTokenExpired(token, 1_000_000)).toBe(true);
    expect(isTokenExpired('opaque', 5)).toBe(false);
  });
});
