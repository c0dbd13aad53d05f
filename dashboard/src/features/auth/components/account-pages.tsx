import { useEffect, useRef, useState, type FormEvent, type ReactNode } from 'react';
import { Link, useSearchParams } from 'react-router-dom';
import { errorMessage, fieldErrors } from '@/lib/api';
import { Button } from '@/components/ui/button';
import { TextField } from '@/components/ui/field';
import { Logo } from '@/components/layout/logo';
import { LoadingState } from '@/components/ui/states';
import { confirmPasswordReset, requestPasswordReset, verifyEmail } from '../api';
import { useSession } from '../session-context';
import { MIN_PASSWORD_LENGTH } from '../schema';

function AuthCard({ title, children }: { title: string; children: ReactNode }) {
  return (
    <div className="auth-page">
      <div className="auth-card">
        <div className="auth-brand">
          <Logo />
        </div>
        <h1>{title}</h1>
        {children}
      </div>
    </div>
  );
}

/** `#/verify-email?token=…`: confirms the address once, on arrival. */
export function VerifyEmailPage() {
  const [params] = useSearchParams();
  const token = params.get('token') ?? '';
  const session = useSession();
  const [state, setState] = useState<'working' | 'done' | 'failed'>(token ? 'working' : 'failed');
  const [message, setMessage] = useState(token ? '' : 'This link has no token in it.');
  const sent = useRef(false);

  useEffect(() => {
    if (!token || sent.current) return;
    sent.current = true;
    verifyEmail(token)
      .then(() => {
        setState('done');
        if (session.status === 'ready') session.retry();
      })
      .catch((err: unknown) => {
        setState('failed');
        setMessage(errorMessage(err));
      });
  }, [token, session]);

  return (
    <AuthCard title="Verify your email">
      {state === 'working' && <LoadingState label="Verifying…" />}
      {state === 'done' && (
        <>
          <div className="banner banner-info" role="status">
            Your email address is verified. You can now create API keys and add providers.
          </div>
          <Link to="/" className="btn btn-primary btn-block">
            Go to the dashboard
          </Link>
        </>
      )}
      {state === 'failed' && (
        <>
          <div className="banner banner-error" role="alert">
            {message}
          </div>
          <p className="auth-switch">
            Log in and ask for a new link from the banner at the top of the dashboard. <Link to="/">Open the dashboard</Link>
          </p>
        </>
      )}
    </AuthCard>
  );
}

/** `#/forgot-password`: asks for a reset link; the answer never says whether the account exists. */
export function ForgotPasswordPage() {
  const [email, setEmail] = useState('');
  const [error, setError] = useState<string | undefined>();
  const [done, setDone] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function onSubmit(event: FormEvent) {
    event.preventDefault();
    if (!email.trim()) {
      setError('Enter your email address.');
      return;
    }
    setBusy(true);
    try {
      const answer = await requestPasswordReset(email.trim());
      setDone(answer.message);
    } catch (err) {
      setError(fieldErrors(err).email);
    } finally {
      setBusy(false);
    }
  }

  return (
    <AuthCard title="Reset your password">
      {done ? (
        <div className="banner banner-info" role="status">
          {done.charAt(0).toUpperCase() + done.slice(1)}.
        </div>
      ) : (
        <form onSubmit={onSubmit} noValidate className="form">
          <TextField label="Email" type="email" autoComplete="email" value={email} onChange={(e) => setEmail(e.target.value)} error={error} autoFocus />
          <Button type="submit" variant="primary" busy={busy} className="btn-block">
            Send a reset link
          </Button>
        </form>
      )}
      <p className="auth-switch">
        <Link to="/login">Back to log in</Link>
      </p>
    </AuthCard>
  );
}

/** `#/reset-password?token=…`: sets a new password; every earlier session ends. */
export function ResetPasswordPage() {
  const [params] = useSearchParams();
  const token = params.get('token') ?? '';
  const [password, setPassword] = useState('');
  const [error, setError] = useState<string | undefined>();
  const [problem, setProblem] = useState<string | null>(null);
  const [done, setDone] = useState(false);
  const [busy, setBusy] = useState(false);

  async function onSubmit(event: FormEvent) {
    event.preventDefault();
    if (password.length < MIN_PASSWORD_LENGTH) {
      setError(`Use at least ${MIN_PASSWORD_LENGTH} characters.`);
      return;
    }
    setBusy(true);
    setProblem(null);
    try {
      await confirmPasswordReset(token, password);
      setDone(true);
    } catch (err) {
      const fields = fieldErrors(err);
      setError(fields.new_password);
      if (!fields.new_password) setProblem(errorMessage(err));
    } finally {
      setBusy(false);
    }
  }

  return (
    <AuthCard title="Choose a new password">
      {done ? (
        <>
          <div className="banner banner-info" role="status">
            Your password was changed and every other session was logged out.
          </div>
          <Link to="/login" className="btn btn-primary btn-block">
            Log in
          </Link>
        </>
      ) : (
        <form onSubmit={onSubmit} noValidate className="form">
          {problem && (
            <div className="banner banner-error" role="alert">
              {problem}
            </div>
          )}
          <TextField
            label="New password"
            type="password"
            autoComplete="new-password"
            value={password}
            onChange={(e) => setPassword(e.target.value)}
            error={error}
            hint={`At least ${MIN_PASSWORD_LENGTH} characters.`}
            autoFocus
          />
          <Button type="submit" variant="primary" busy={busy} disabled={!token} className="btn-block">
            Set password
          </Button>
        </form>
      )}
    </AuthCard>
  );
}
