import { useState, type FormEvent } from 'react';
import { Link, useLocation } from 'react-router-dom';
import { ApiError, fieldErrors } from '@/lib/api';
import { useResource } from '@/lib/use-resource';
import { Button } from '@/components/ui/button';
import { TextField } from '@/components/ui/field';
import { Logo } from '@/components/layout/logo';
import { fetchServerSettings } from '../api';
import { useSession } from '../session-context';
import { MIN_PASSWORD_LENGTH, validateCredentials, type CredentialErrors } from '../schema';

export function AuthForm({ mode }: { mode: 'login' | 'signup' }) {
  const session = useSession();
  const location = useLocation();
  const [email, setEmail] = useState('');
  const [password, setPassword] = useState('');
  const [errors, setErrors] = useState<CredentialErrors>({});
  const [busy, setBusy] = useState(false);
  const [refusedSignup, setRefusedSignup] = useState(false);
  const settings = useResource((signal) => fetchServerSettings(signal), []);
  // Unknown (still loading, or an older server) counts as open: the server has the last word.
  const signupClosed = settings.data?.signup_enabled === false || refusedSignup;
  const isSignup = mode === 'signup';

  async function onSubmit(event: FormEvent) {
    event.preventDefault();
    const values = { email: email.trim(), password };
    const found = validateCredentials(values, mode);
    setErrors(found);
    if (Object.keys(found).length > 0) return;
    setBusy(true);
    try {
      // On success the session changes and the route redirects (see PublicOnly).
      if (isSignup) await session.signup(values);
      else await session.login(values);
    } catch (error) {
      if (isSignup && error instanceof ApiError && error.code === 'signup_disabled') {
        setRefusedSignup(true);
        setBusy(false);
        return;
      }
      const found: CredentialErrors = fieldErrors(error);
      if (isSignup && error instanceof ApiError && error.status === 409 && !found.email)
        found.email = 'An account with this email already exists. Log in instead.';
      setErrors(found);
      setBusy(false);
    }
  }

  if (isSignup && signupClosed) return <SignupClosed />;

  return (
    <div className="auth-page">
      <div className="auth-card">
        <div className="auth-brand">
          <Logo />
        </div>
        <h1>{isSignup ? 'Create your account' : 'Log in to Perpetuo'}</h1>
        <p className="auth-subtitle">
          {isSignup
            ? 'One account, one gateway for every model provider.'
            : 'Manage providers, keys, logs and usage of your gateway.'}
        </p>
        {!isSignup && session.notice && (
          <div className="banner banner-info" role="status">
            {session.notice}
          </div>
        )}
        <form onSubmit={onSubmit} noValidate className="form">
          <TextField
            label="Email"
            type="email"
            name="email"
            autoComplete="email"
            value={email}
            onChange={(e) => setEmail(e.target.value)}
            error={errors.email}
            autoFocus
          />
          <TextField
            label="Password"
            type="password"
            name="password"
            autoComplete={isSignup ? 'new-password' : 'current-password'}
            value={password}
            onChange={(e) => setPassword(e.target.value)}
            error={errors.password}
            hint={isSignup ? `At least ${MIN_PASSWORD_LENGTH} characters.` : undefined}
          />
          <Button type="submit" variant="primary" busy={busy} className="btn-block">
            {isSignup ? 'Create account' : 'Log in'}
          </Button>
        </form>
        <p className="auth-switch">
          {isSignup ? (
            <>
              Already have an account? <Link to="/login" state={location.state}>Log in</Link>
            </>
          ) : signupClosed ? (
            <>Accounts on this server are created by its administrator.</>
          ) : (
            <>
              New here? <Link to="/signup" state={location.state}>Create an account</Link>
              <br />
              <Link to="/forgot-password">Forgot your password?</Link>
            </>
          )}
        </p>
      </div>
    </div>
  );
}

/** Shown instead of the signup form when the operator closed public signup. */
function SignupClosed() {
  return (
    <div className="auth-page">
      <div className="auth-card">
        <div className="auth-brand">
          <Logo />
        </div>
        <h1>Signup is closed</h1>
        <p className="auth-subtitle">
          Accounts on this server are created by its administrator. Ask them for one, then log in.
        </p>
        <p className="auth-switch">
          Already have an account? <Link to="/login">Log in</Link>
        </p>
      </div>
    </div>
  );
}
