import { lazy, Suspense, type ReactNode } from 'react';
import { HashRouter, Navigate, Route, Routes, useLocation } from 'react-router-dom';
import { AppShell } from '@/components/layout/app-shell';
import { Button } from '@/components/ui/button';
import { ErrorState, LoadingState } from '@/components/ui/states';
import { Toaster } from '@/components/ui/toaster';
import { SessionProvider, useSession } from '@/features/auth/session-context';
import { ForgotPasswordPage, ResetPasswordPage, VerifyEmailPage } from '@/routes/account';
import ApiKeysRoute from '@/routes/api-keys';
import AuditRoute from '@/routes/audit';
import HomeRoute from '@/routes/home';
import InviteRoute from '@/routes/invite';
import LoginRoute from '@/routes/login';
import LogsRoute from '@/routes/logs';
import MembersRoute from '@/routes/members';
import NotFoundRoute from '@/routes/not-found';
import ProviderEditRoute from '@/routes/provider-edit';
import ProviderNewRoute from '@/routes/provider-new';
import ProvidersRoute from '@/routes/providers';
import SettingsRoute from '@/routes/settings';
import SignupRoute from '@/routes/signup';

// Charts are the heaviest part of the bundle: load them with the Usage view.
const UsageRoute = lazy(() => import('@/routes/usage'));

function RequireAuth({ children }: { children: ReactNode }) {
  const session = useSession();
  const location = useLocation();
  if (session.status === 'anonymous')
    return <Navigate to="/login" replace state={{ from: location.pathname + location.search }} />;
  if (session.status === 'loading')
    return (
      <div className="fullscreen">
        <LoadingState label="Loading your workspace…" />
      </div>
    );
  if (session.status === 'error')
    return (
      <div className="fullscreen">
        <ErrorState error={session.loadError} onRetry={session.retry} title="Could not load your account" />
        <Button variant="ghost" onClick={() => void session.logout()}>
          Log out
        </Button>
      </div>
    );
  return <>{children}</>;
}

/** Login and signup; once signed in, go back to where the user was (or home). */
function PublicOnly({ children }: { children: ReactNode }) {
  const session = useSession();
  const location = useLocation();
  if (session.status !== 'anonymous') {
    const from = (location.state as { from?: string } | null)?.from;
    return <Navigate to={from && !from.startsWith('/login') && !from.startsWith('/signup') ? from : '/'} replace />;
  }
  return <>{children}</>;
}

export function AppRoutes() {
  return (
    <Routes>
      <Route path="/login" element={<PublicOnly><LoginRoute /></PublicOnly>} />
      <Route path="/signup" element={<PublicOnly><SignupRoute /></PublicOnly>} />
      <Route path="/forgot-password" element={<PublicOnly><ForgotPasswordPage /></PublicOnly>} />
      <Route path="/reset-password" element={<ResetPasswordPage />} />
      <Route path="/verify-email" element={<VerifyEmailPage />} />
      <Route path="/invite" element={<InviteRoute />} />
      <Route element={<RequireAuth><AppShell /></RequireAuth>}>
        <Route index element={<HomeRoute />} />
        <Route path="providers" element={<ProvidersRoute />} />
        <Route path="providers/new" element={<ProviderNewRoute />} />
        <Route path="providers/:providerId" element={<ProviderEditRoute />} />
        <Route path="api-keys" element={<ApiKeysRoute />} />
        <Route path="logs" element={<LogsRoute />} />
        <Route
          path="usage"
          element={
            <Suspense fallback={<LoadingState label="Loading usage…" />}>
              <UsageRoute />
            </Suspense>
          }
        />
        <Route path="members" element={<MembersRoute />} />
        <Route path="audit" element={<AuditRoute />} />
        <Route path="settings" element={<SettingsRoute />} />
        <Route path="*" element={<NotFoundRoute />} />
      </Route>
    </Routes>
  );
}

export function App() {
  return (
    <SessionProvider>
      <HashRouter>
        <AppRoutes />
      </HashRouter>
      <Toaster />
    </SessionProvider>
  );
}
