import { Link } from 'react-router-dom';
import { useResource } from '@/lib/use-resource';
import { Badge } from '@/components/ui/badge';
import { Button } from '@/components/ui/button';
import { Card } from '@/components/ui/card';
import { CodeBlock, CopyButton } from '@/components/ui/copy-button';
import { ErrorState, LoadingState } from '@/components/ui/states';
import { Tabs } from '@/components/ui/tabs';
import { useSession, useWorkspaceId } from '@/features/auth/session-context';
import { can } from '@/features/members/schema';
import { listProviders } from '@/features/providers/api';
import { getMeta } from '../api';
import { KEY_PLACEHOLDER } from '../schema';
import { curlSnippet, openaiBaseUrl, pythonSnippet } from '../snippets';

export function Quickstart() {
  const workspaceId = useWorkspaceId();
  const { signupKey, dismissSignupKey, workspace } = useSession();
  // A viewer may not list providers or keys: the steps then say who can.
  const seesProviders = can(workspace?.role, 'viewProviders');
  const meta = useResource((signal) => getMeta(signal), []);
  const providers = useResource((signal) => listProviders(workspaceId, signal), [workspaceId], seesProviders);
  const shownKey = signupKey && signupKey.workspaceId === workspaceId ? signupKey : null;
  const gatewayUrl = meta.data?.gateway_url ?? null;
  const providerCount = providers.data?.length ?? 0;
  const enabledCount = providers.data?.filter((p) => p.enabled).length ?? 0;

  return (
    <Card title="Quickstart" description="Point any OpenAI client at the gateway; it routes to your providers with fallback.">
      <ol className="steps">
        <li className="step">
          <div className="step-head">
            <span className="step-title">Connect a provider</span>
            {!seesProviders || providers.loading ? null : providerCount > 0 ? (
              <Badge tone="success">
                {enabledCount} of {providerCount} enabled
              </Badge>
            ) : (
              <Badge tone="warning">None yet</Badge>
            )}
          </div>
          {seesProviders ? (
            <p className="step-text">
              Add the API key of OpenAI, Anthropic, Gemini or any OpenAI-compatible endpoint.{' '}
              <Link to={providerCount > 0 ? '/providers' : '/providers/new'}>{providerCount > 0 ? 'Manage providers' : 'Add a provider'}</Link>
            </p>
          ) : (
            <p className="step-text">Providers are managed by the admins of this workspace.</p>
          )}
        </li>
        <li className="step">
          <div className="step-head">
            <span className="step-title">Get an API key</span>
          </div>
          {shownKey ? (
            <div className="secret">
              <div className="banner banner-warning" role="note">
                This key was created with your account. Copy it now: it is shown only once.
              </div>
              <label htmlFor="signup-api-key" className="field-label">
                Your API key
              </label>
              <div className="secret-row">
                <input id="signup-api-key" className="input input-mono" readOnly value={shownKey.key} onFocus={(e) => e.currentTarget.select()} />
                <CopyButton text={shownKey.key} label="Copy key" size="md" />
                <Button onClick={dismissSignupKey}>I have saved it</Button>
              </div>
            </div>
          ) : !seesProviders ? (
            <p className="step-text">
              Your role reads logs and usage; ask an admin for the member role to create API keys.
            </p>
          ) : (
            <p className="step-text">
              The snippets below use <code>{KEY_PLACEHOLDER}</code>; replace it with a key from{' '}
              <Link to="/api-keys">API keys</Link> (create one there; it is shown once).
            </p>
          )}
        </li>
        <li className="step">
          <div className="step-head">
            <span className="step-title">Send a request</span>
          </div>
          {meta.loading ? (
            <LoadingState label="Loading gateway address…" />
          ) : meta.error && !meta.data ? (
            <ErrorState error={meta.error} onRetry={meta.reload} title="Could not load the gateway address" />
          ) : (
            <>
              <p className="step-text">
                Base URL: <code className="pill">{openaiBaseUrl(gatewayUrl)}</code>
              </p>
              <Tabs
                label="Snippet language"
                items={[
                  { id: 'curl', label: 'curl', content: <CodeBlock label="curl" code={curlSnippet(gatewayUrl, shownKey?.key)} /> },
                  { id: 'python', label: 'Python', content: <CodeBlock label="Python" code={pythonSnippet(gatewayUrl, shownKey?.key)} /> },
                ]}
              />
            </>
          )}
        </li>
      </ol>
    </Card>
  );
}
