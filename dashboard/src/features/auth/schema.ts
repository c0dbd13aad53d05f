export type Role = 'owner' | 'admin' | 'member' | 'viewer' | string;

export interface User {
  id: string;
  email: string;
  created_at: string;
  /** False until the owner of the address follows the verification link. */
  email_verified?: boolean;
}

export interface Workspace {
  id: string;
  name: string;
  role: Role;
  created_at: string;
}

/** The part of `GET /meta` the login and signup pages read. */
export interface ServerSettings {
  /** False when the operator closed public signup (`SIGNUP_ENABLED=false`). */
  signup_enabled?: boolean;
}

export interface SignupResponse {
  token: string;
  refresh_token: string;
  user: User;
  workspace: Workspace;
  /** Null when the email must be verified before any key is made. */
  api_key: { id: string; key: string; prefix: string } | null;
}

export interface LoginResponse {
  token: string;
  refresh_token: string;
  user: User;
}

export interface MeResponse {
  user: User;
  workspaces: Workspace[];
}

export interface Credentials {
  email: string;
  password: string;
}

export const MIN_PASSWORD_LENGTH = 8;

const EMAIL_PATTERN = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

export type CredentialErrors = Partial<Record<keyof Credentials, string>>;

/** Checks credentials before they are sent; signup also enforces the password length. */
export function validateCredentials(values: Credentials, mode: 'login' | 'signup'): CredentialErrors {
  const errors: CredentialErrors = {};
  const email = values.email.trim();
  if (!email) errors.email = 'Enter your email address.';
  else if (!EMAIL_PATTERN.test(email)) errors.email = 'Enter a valid email address.';
  if (!values.password) errors.password = 'Enter your password.';
  else if (mode === 'signup' && values.password.length < MIN_PASSWORD_LENGTH)
    errors.password = `Use at least ${MIN_PASSWORD_LENGTH} characters.`;
  return errors;
}
