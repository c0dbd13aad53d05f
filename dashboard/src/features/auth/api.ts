import { api } from '@/lib/api';
import type { Credentials, LoginResponse, MeResponse, ServerSettings, SignupResponse, User } from './schema';

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

/** What the server allows before anyone logs in (`GET /meta`); failures stay quiet; the forms then assume the defaults. */
export function fetchServerSettings(signal?: AbortSignal) {
  return api.get<ServerSettings>('/meta', { signal, auth: false, silent: true });
}

export function verifyEmail(token: string) {
  return api.post<User>('/auth/verify-email', { token }, { auth: false, silent: true });
}

export function resendVerification() {
  return api.post<{ message: string }>('/auth/verify-email/resend');
}

export function requestPasswordReset(email: string) {
  return api.post<{ message: string }>('/auth/password-reset', { email }, { auth: false });
}

export function confirmPasswordReset(token: string, newPassword: string) {
  return api.post<void>('/auth/password-reset/confirm', { token, new_password: newPassword }, { auth: false, silent: true });
}
