-- The response cache: per workspace a mode (`off`, `on`, or `opt_in`: only requests that
-- ask for it) and the time an entry lives; a generation that is part of every cache key,
-- so bumping it empties the workspace's cache in every gateway at once (old entries simply
-- age out). A key may override the workspace's mode. Log rows say whether the cache
-- answered, and the counters keep a hit's tokens and the money it saved apart.

ALTER TABLE workspaces
    ADD COLUMN cache_mode text NOT NULL DEFAULT 'off'
        CONSTRAINT workspaces_cache_mode_known CHECK (cache_mode IN ('off', 'on', 'opt_in')),
    ADD COLUMN cache_ttl_seconds integer NOT NULL DEFAULT 3600
        CONSTRAINT workspaces_cache_ttl_range CHECK (cache_ttl_seconds BETWEEN 1 AND 2592000),
    ADD COLUMN cache_generation bigint NOT NULL DEFAULT 0;

-- The cache settings travel with a workspace's entries in every gateway's entry cache, as
-- the routing settings do (V16): a change refreshes that workspace's entries.
CREATE TRIGGER workspaces_cache_notify
AFTER UPDATE OF cache_mode, cache_ttl_seconds, cache_generation ON workspaces
FOR EACH ROW
WHEN ((OLD.cache_mode, OLD.cache_ttl_seconds, OLD.cache_generation) IS DISTINCT FROM
      (NEW.cache_mode, NEW.cache_ttl_seconds, NEW.cache_generation))
EXECUTE FUNCTION perpetuo_notify_workspace_routing();

-- Who last set a key's cache mode is governed like its limits (V11): a member may change
-- it only when a member set it.
ALTER TABLE api_keys
    ADD COLUMN cache_mode text NOT NULL DEFAULT 'inherit'
        CONSTRAINT api_keys_cache_mode_known CHECK (cache_mode IN ('inherit', 'off', 'on', 'opt_in')),
    ADD COLUMN cache_mode_set_by text CHECK (cache_mode_set_by IN ('owner', 'admin', 'member'));

-- Gateways cache the mode with the key: a change of it must reach them (the trigger's
-- column list is the one of V5 plus cache_mode).
DROP TRIGGER api_keys_notify ON api_keys;
CREATE TRIGGER api_keys_notify
AFTER INSERT OR DELETE OR UPDATE OF key_hash, revoked_at, expires_at, workspace_id,
    rpm_limit, tpm_limit, concurrency_limit, budget_nusd, budget_period, allowed_models,
    label, owner_email, cache_mode ON api_keys
FOR EACH ROW EXECUTE FUNCTION perpetuo_notify_api_keys();

-- Added to the partitioned parent, the columns reach every partition (and the partitions
-- created later copy the parent); both are NULL for requests the cache did not see.
ALTER TABLE request_logs
    ADD COLUMN cache text CONSTRAINT request_logs_cache_known CHECK (cache IN ('hit', 'miss', 'bypass')),
    ADD COLUMN cache_saved_nusd bigint CONSTRAINT request_logs_cache_saved_positive CHECK (cache_saved_nusd >= 0);

-- A hit counts as a request; its tokens go to cache_hit_tokens instead of the token
-- counters, and what the provider would have charged to cache_saved_nusd.
ALTER TABLE usage_counters
    ADD COLUMN cache_hits bigint NOT NULL DEFAULT 0,
    ADD COLUMN cache_hit_tokens bigint NOT NULL DEFAULT 0,
    ADD COLUMN cache_saved_nusd bigint NOT NULL DEFAULT 0;
ALTER TABLE usage_rollup
    ADD COLUMN cache_hits bigint NOT NULL DEFAULT 0,
    ADD COLUMN cache_hit_tokens bigint NOT NULL DEFAULT 0,
    ADD COLUMN cache_saved_nusd bigint NOT NULL DEFAULT 0;
