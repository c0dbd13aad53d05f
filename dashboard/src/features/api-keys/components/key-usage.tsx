import { formatCost } from '@/lib/format';
import { useResource } from '@/lib/use-resource';
import { useWorkspaceId } from '@/features/auth/session-context';
import { getKeyLimits } from '../api';
import { hasLimits, usedShare, type ApiKey, type Limits } from '../schema';

/**
 * A key's use against its limits: requests this minute and spend this period as a bar.
 * Consumption is read only for a key the caller manages (`withUsage`); the server
 * refuses it for anyone else's, so other keys show their limits alone.
 */
export function KeyUsage({ apiKey, withUsage = true }: { apiKey: ApiKey; withUsage?: boolean }) {
  const workspaceId = useWorkspaceId();
  const limited = hasLimits(apiKey.limits);
  const report = useResource((signal) => getKeyLimits(workspaceId, apiKey.id, signal), [workspaceId, apiKey.id, apiKey.limits], limited && withUsage);
  if (!limited) return <span className="muted">No limits</span>;
  if (!withUsage && apiKey.limits) return <LimitsOnly limits={apiKey.limits} />;
  const data = report.data;
  if (!data) return <span className="muted">…</span>;
  const { limits, usage } = data;
  const spend = usedShare(usage.spend_usd, limits.budget_usd);
  return (
    <div className="key-usage">
      {limits.rpm !== null && (
        <div>
          {usage.requests_last_minute} / {limits.rpm} req/min
        </div>
      )}
      {limits.tpm !== null && (
        <div>
          {usage.tokens_last_minute} / {limits.tpm} tok/min
        </div>
      )}
      {limits.max_concurrency !== null && <div>≤ {limits.max_concurrency} at once</div>}
      {spend !== null && limits.budget_usd !== null && (
        <div>
          <div
            className="usage-bar"
            role="meter"
            aria-label={`Spend this ${limits.budget_period ?? 'month'}`}
            aria-valuemin={0}
            aria-valuemax={limits.budget_usd}
            aria-valuenow={usage.spend_usd}
          >
            <span style={{ width: `${Math.round(spend * 100)}%` }} />
          </div>
          {formatCost(usage.spend_usd)} / {formatCost(limits.budget_usd)} this {limits.budget_period ?? 'month'}
        </div>
      )}
    </div>
  );
}

/** The limits of a key whose consumption the caller may not read. */
function LimitsOnly({ limits }: { limits: Limits }) {
  return (
    <div className="key-usage">
      {limits.rpm !== null && <div>{limits.rpm} req/min</div>}
      {limits.tpm !== null && <div>{limits.tpm} tok/min</div>}
      {limits.max_concurrency !== null && <div>≤ {limits.max_concurrency} at once</div>}
      {limits.budget_usd !== null && (
        <div>
          {formatCost(limits.budget_usd)} per {limits.budget_period ?? 'month'}
        </div>
      )}
    </div>
  );
}
