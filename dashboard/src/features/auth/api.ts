import { api } from '../../lib/api';
import type { Credentials, LoginResponse, MeResponse, SignupResponse } from './schema';

export function signup(credentials: Credentials) {
  return api.post<SignupResponse>('/auth/signup', credentials, { auth: false });
}

export function login(credentials: Credentials) {
  return api.post<LoginResponse>('/auth/login', credentials, { auth: false });
}

export function fetchMe(signal?: AbortSignal) {
  return api.get<MeResponse>('/auth/me', { signal });
}

/** Ends the session on the server (its refresh token and access tokens). */
export function logout() {
  return api.logout();
}
