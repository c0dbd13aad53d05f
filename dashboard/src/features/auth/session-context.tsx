import { createContext, useCallback, useContext, useEffect, useMemo, useRef, useState, type ReactNode } from 'react';
import { api, ApiError } from '@/lib/api';
import {
  clearSession,
  isTokenExpired,
  loadRefreshToken,
  loadToken,
  loadWorkspaceId,
  saveTokens,
  saveWorkspaceId,
  tokenExpiry,
} from '@/lib/session';
import * as authApi from './api';
import type { Credentials, User, Workspace } from './schema';

export const EXPIRED_MESSAGE = 'Your session has expired. Please log in again.';

export interface SignupKey {
  workspaceId: string;
  key: string;
  prefix: string;
}

type Status = 'anonymous' | 'loading' | 'ready' | 'error';

interface SessionState {
  status: Status;
  token: string | null;
  user: User | null;
  workspaces: Workspace[];
  workspaceId: string | null;
  loadError: unknown;
  /** Shown on the login page after a logout or an expiry. */
  notice: string | null;
  /** The key created at signup, shown once on the home view. */
  signupKey: SignupKey | null;
}

interface SessionContextValue extends SessionState {
  workspace: Workspace | null;
  login: (credentials: Credentials) => Promise<void>;
  signup: (credentials: Credentials) => Promise<void>;
  /** Ends the session on the server, then here. */
  logout: (notice?: string) => Promise<void>;
  retry: () => void;
  selectWorkspace: (id: string) => void;
  upsertWorkspace: (workspace: Workspace) => void;
  dismissSignupKey: () => void;
}

const SessionContext = createContext<SessionContextValue | null>(null);

function initialState(): SessionState {
  const token = loadToken();
  // An expired access token is fine while there is a refresh token: the first request
  // refreshes it.
  if (token && isTokenExpired(token) && !loadRefreshToken()) {
    clearSession();
    return blank(EXPIRED_MESSAGE);
  }
  return {
    ...blank(null),
    status: token ? 'loading' : 'anonymous',
    token,
    workspaceId: token ? loadWorkspaceId() : null,
  };
}

function blank(notice: string | null): SessionState {
  return {
    status: 'anonymous',
    token: null,
    user: null,
    workspaces: [],
    workspaceId: null,
    loadError: undefined,
    notice,
    signupKey: null,
  };
}

function pickWorkspace(workspaces: Workspace[], preferred: string | null): string | null {
  if (preferred && workspaces.some((w) => w.id === preferred)) return preferred;
  return workspaces[0]?.id ?? null;
}

export function SessionProvider({ children }: { children: ReactNode }) {
  const [state, setState] = useState<SessionState>(initialState);
  const [attempt, setAttempt] = useState(0);
  const stateRef = useRef(state);
  stateRef.current = state;

  const endSession = useCallback((notice?: string) => {
    clearSession();
    setState(blank(notice ?? null));
  }, []);

  const logout = useCallback(
    async (notice?: string) => {
      await authApi.logout();
      endSession(notice);
    },
    [endSession],
  );

  // Access tokens are refreshed on a 401; a 401 that a refresh cannot cure ends the session.
  useEffect(() => {
    api.configure({
      getRefreshToken: loadRefreshToken,
      onRefreshed: (tokens) => {
        saveTokens(tokens);
        setState((s) => (s.token ? { ...s, token: tokens.token } : s));
      },
      onUnauthorized: () => {
        if (stateRef.current.token) endSession(EXPIRED_MESSAGE);
      },
    });
    return () => api.configure({ getRefreshToken: undefined, onRefreshed: undefined, onUnauthorized: undefined });
  }, [endSession]);

  // Without a refresh token, the session ends when the access token expires.
  useEffect(() => {
    if (!state.token || loadRefreshToken()) return;
    const exp = tokenExpiry(state.token);
    if (exp === null) return;
    const delay = exp - Date.now();
    if (delay <= 0) {
      endSession(EXPIRED_MESSAGE);
      return;
    }
    const timer = setTimeout(() => endSession(EXPIRED_MESSAGE), Math.min(delay, 2_147_000_000));
    return () => clearTimeout(timer);
  }, [state.token, endSession]);

  // With a stored token, load the user and workspaces.
  useEffect(() => {
    if (state.status !== 'loading' || !state.token) return;
    const controller = new AbortController();
    authApi
      .fetchMe(controller.signal)
      .then((me) => {
        const workspaceId = pickWorkspace(me.workspaces, stateRef.current.workspaceId);
        if (workspaceId) saveWorkspaceId(workspaceId);
        setState((s) => ({ ...s, status: 'ready', user: me.user, workspaces: me.workspaces, workspaceId, loadError: undefined }));
      })
      .catch((error: unknown) => {
        if (controller.signal.aborted) return;
        if (error instanceof ApiError && error.status === 401) return; // handled: session ended
        setState((s) => ({ ...s, status: 'error', loadError: error }));
      });
    return () => controller.abort();
  }, [state.status, state.token, attempt]);

  const login = useCallback(async (credentials: Credentials) => {
    const result = await authApi.login(credentials);
    saveTokens(result);
    setState({ ...blank(null), status: 'loading', token: result.token, user: result.user, workspaceId: loadWorkspaceId() });
  }, []);

  const signup = useCallback(async (credentials: Credentials) => {
    const result = await authApi.signup(credentials);
    saveTokens(result);
    saveWorkspaceId(result.workspace.id);
    setState({
      ...blank(null),
      status: 'ready',
      token: result.token,
      user: result.user,
      workspaces: [result.workspace],
      workspaceId: result.workspace.id,
      signupKey: result.api_key
        ? { workspaceId: result.workspace.id, key: result.api_key.key, prefix: result.api_key.prefix }
        : null,
    });
  }, []);

  const retry = useCallback(() => {
    setState((s) => (s.token ? { ...s, status: 'loading', loadError: undefined } : s));
    setAttempt((a) => a + 1);
  }, []);

  const selectWorkspace = useCallback((id: string) => {
    saveWorkspaceId(id);
    setState((s) => ({ ...s, workspaceId: id }));
  }, []);

  const upsertWorkspace = useCallback((workspace: Workspace) => {
    setState((s) => {
      const exists = s.workspaces.some((w) => w.id === workspace.id);
      const workspaces = exists
        ? s.workspaces.map((w) => (w.id === workspace.id ? { ...w, ...workspace } : w))
        : [...s.workspaces, workspace];
      return { ...s, workspaces };
    });
  }, []);

  const dismissSignupKey = useCallback(() => setState((s) => ({ ...s, signupKey: null })), []);

  const value = useMemo<SessionContextValue>(
    () => ({
      ...state,
      workspace: state.workspaces.find((w) => w.id === state.workspaceId) ?? null,
      login,
      signup,
      logout,
      retry,
      selectWorkspace,
      upsertWorkspace,
      dismissSignupKey,
    }),
    [state, login, signup, logout, retry, selectWorkspace, upsertWorkspace, dismissSignupKey],
  );

  return <SessionContext.Provider value={value}>{children}</SessionContext.Provider>;
}

export function useSession(): SessionContextValue {
  const value = useContext(SessionContext);
  if (!value) throw new Error('useSession must be used inside SessionProvider');
  return value;
}

/** The current workspace id inside the authenticated shell (which guarantees one). */
export function useWorkspaceId(): string {
  const { workspaceId } = useSession();
  if (!workspaceId) throw new Error('No workspace selected');
  return workspaceId;
}
