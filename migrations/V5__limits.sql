-- Governance: optional limits per API key and per workspace, key metadata and model
-- allow-lists. NULL means "no limit". Budgets are in nano-USD per calendar period (UTC).

ALTER TABLE api_keys
    ADD COLUMN rpm_limit         integer CHECK (rpm_limit > 0),
    ADD COLUMN tpm_limit         integer CHECK (tpm_limit > 0),
    ADD COLUMN concurrency_limit integer CHECK (concurrency_limit > 0),
    ADD COLUMN budget_nusd       bigint  CHECK (budget_nusd >= 0),
    ADD COLUMN budget_period     text NOT NULL DEFAULT 'month'
        CHECK (budget_period IN ('day', 'week', 'month')),
    ADD COLUMN allowed_models    text[] NOT NULL DEFAULT '{}',
    ADD COLUMN label             text CHECK (length(label) <= 100),
    ADD COLUMN owner_email       text CHECK (length(owner_email) <= 254);

ALTER TABLE workspaces
    ADD COLUMN rpm_limit         integer CHECK (rpm_limit > 0),
    ADD COLUMN tpm_limit         integer CHECK (tpm_limit > 0),
    ADD COLUMN concurrency_limit integer CHECK (concurrency_limit > 0),
    ADD COLUMN budget_nusd       bigint  CHECK (budget_nusd >= 0),
    ADD COLUMN budget_period     text NOT NULL DEFAULT 'month'
        CHECK (budget_period IN ('day', 'week', 'month'));

-- Gateways cache limits with the key: a change to any of them must reach them.
DROP TRIGGER api_keys_notify ON api_keys;
CREATE TRIGGER api_keys_notify
AFTER INSERT OR DELETE OR UPDATE OF key_hash, revoked_at, expires_at, workspace_id,
    rpm_limit, tpm_limit, concurrency_limit, budget_nusd, budget_period, allowed_models,
    label, owner_email ON api_keys
FOR EACH ROW EXECUTE FUNCTION perpetuo_notify_api_keys();

CREATE FUNCTION perpetuo_notify_workspaces() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('perpetuo_invalidate',
        json_build_object('table', 'workspaces', 'workspace_id', NEW.id)::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER workspaces_notify
AFTER UPDATE OF rpm_limit, tpm_limit, concurrency_limit, budget_nusd, budget_period
ON workspaces
FOR EACH ROW EXECUTE FUNCTION perpetuo_notify_workspaces();

-- Spend per key and period is summed from the hourly counters.
CREATE INDEX usage_counters_key_bucket_idx ON usage_counters (api_key_id, bucket);
