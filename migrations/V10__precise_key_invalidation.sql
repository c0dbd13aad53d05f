-- Change notifications say precisely what a gateway must drop.
--
-- An api_keys notification carries `revocation`: true when the key can no longer be
-- trusted as it was (deleted, revoked or un-revoked, re-keyed, moved to another
-- workspace, or its expiry changed); a gateway then drops its stale copy as well. Any
-- other change (limits, allowed models, label) only refreshes the cached key.
--
-- A workspaces notification fires only when one of the limits a gateway caches with the
-- workspace's keys actually changed, and names the workspace whose keys to refresh.

CREATE OR REPLACE FUNCTION perpetuo_notify_api_keys() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    revocation boolean := false;
BEGIN
    IF TG_OP = 'DELETE' THEN
        r := OLD;
        revocation := true;
    ELSE
        r := NEW;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        revocation := OLD.revoked_at IS DISTINCT FROM NEW.revoked_at
            OR OLD.expires_at IS DISTINCT FROM NEW.expires_at
            OR OLD.workspace_id IS DISTINCT FROM NEW.workspace_id
            OR OLD.key_hash IS DISTINCT FROM NEW.key_hash;
    END IF;
    PERFORM pg_notify('perpetuo_invalidate',
        json_build_object('table', 'api_keys', 'key_hash', encode(r.key_hash, 'hex'),
                          'workspace_id', r.workspace_id,
                          'revocation', revocation)::text);
    IF TG_OP = 'UPDATE' AND OLD.key_hash <> NEW.key_hash THEN
        -- The old hash names no key any more.
        PERFORM pg_notify('perpetuo_invalidate',
            json_build_object('table', 'api_keys', 'key_hash', encode(OLD.key_hash, 'hex'),
                              'workspace_id', OLD.workspace_id,
                              'revocation', true)::text);
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER workspaces_notify ON workspaces;
CREATE TRIGGER workspaces_notify
AFTER UPDATE OF rpm_limit, tpm_limit, concurrency_limit, budget_nusd, budget_period
ON workspaces
FOR EACH ROW
WHEN ((OLD.rpm_limit, OLD.tpm_limit, OLD.concurrency_limit, OLD.budget_nusd, OLD.budget_period)
      IS DISTINCT FROM
      (NEW.rpm_limit, NEW.tpm_limit, NEW.concurrency_limit, NEW.budget_nusd, NEW.budget_period))
EXECUTE FUNCTION perpetuo_notify_workspaces();
