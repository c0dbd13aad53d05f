import { useState } from 'react';
import { Link, useLocation, useNavigate, useSearchParams } from 'react-router-dom';
import { ApiError, errorMessage } from '@/lib/api';
import { Button } from '@/components/ui/button';
import { Logo } from '@/components/layout/logo';
import { useSession } from '@/features/auth/session-context';
import { acceptInvitation } from '../api';

/** `#/invite?token=…`: the link of an invitation email. */
export function AcceptInvitation() {
  const [params] = useSearchParams();
  const token = params.get('token') ?? '';
  const session = useSession();
  const location = useLocation();
  const navigate = useNavigate();
  const [busy, setBusy] = useState(false);
  const [problem, setProblem] = useState<string | null>(null);
  const here = location.pathname + location.search;

  async function accept() {
    setBusy(true);
    setProblem(null);
    try {
      const workspace = await acceptInvitation(token);
      session.upsertWorkspace(workspace);
      session.selectWorkspace(workspace.id);
      session.retry();
      navigate('/', { replace: true });
    } catch (err) {
      setProblem(
        err instanceof ApiError && err.code === 'invitation_email_mismatch'
          ? `This invitation is for another email address than ${session.user?.email ?? 'yours'}. Log out and sign in with the invited address.`
          : errorMessage(err),
      );
      setBusy(false);
    }
  }

  return (
    <div className="auth-page">
      <div className="auth-card">
        <div className="auth-brand">
          <Logo />
        </div>
        <h1>Join a workspace</h1>
        {!token ? (
          <p className="auth-subtitle">This link has no invitation in it. Open the link from your email again.</p>
        ) : session.status === 'anonymous' ? (
          <>
            <p className="auth-subtitle">You were invited to a workspace. Sign in with the address the invitation was sent to, then accept it.</p>
            <div className="form">
              <Link to="/signup" state={{ from: here }} className="btn btn-primary btn-block">
                Create an account
              </Link>
              <Link to="/login" state={{ from: here }} className="btn btn-secondary btn-block">
                Log in
              </Link>
            </div>
          </>
        ) : (
          <>
            <p className="auth-subtitle">
              Accept the invitation as <strong>{session.user?.email ?? '…'}</strong>?
            </p>
            {problem && (
              <div className="banner banner-error" role="alert">
                {problem}
              </div>
            )}
            <Button variant="primary" className="btn-block" busy={busy} disabled={session.status !== 'ready'} onClick={() => void accept()}>
              Accept invitation
            </Button>
          </>
        )}
      </div>
    </div>
  );
}
