-- Governance of API keys: the role (owner, admin or member) that last set each governed
-- group of a key's settings — its limits, its allowed models, its expiry. A member may
-- change only what a member set. NULL counts as set by a member.

ALTER TABLE api_keys
    ADD COLUMN limits_set_by         text CHECK (limits_set_by IN ('owner', 'admin', 'member')),
    ADD COLUMN allowed_models_set_by text CHECK (allowed_models_set_by IN ('owner', 'admin', 'member')),
    ADD COLUMN expires_at_set_by     text CHECK (expires_at_set_by IN ('owner', 'admin', 'member'));

-- Keys from before: a group whose last change in the audit log was made by someone other
-- than the key's creator was set by an admin or owner (members manage only the keys they
-- created), so it stays theirs.
WITH changes AS (
    SELECT a.target_id, a.actor_id, a.created_at, a.id,
           a.before -> 'limits' IS DISTINCT FROM a.after -> 'limits' AS limits,
           a.before -> 'allowed_models' IS DISTINCT FROM a.after -> 'allowed_models' AS models,
           a.before -> 'expires_at' IS DISTINCT FROM a.after -> 'expires_at' AS expiry
    FROM audit_log a
    WHERE a.action = 'api_key.updated' AND a.target_type = 'api_key'
), last_limits AS (
    SELECT DISTINCT ON (target_id) target_id, actor_id FROM changes WHERE limits
    ORDER BY target_id, created_at DESC, id DESC
), last_models AS (
    SELECT DISTINCT ON (target_id) target_id, actor_id FROM changes WHERE models
    ORDER BY target_id, created_at DESC, id DESC
), last_expiry AS (
    SELECT DISTINCT ON (target_id) target_id, actor_id FROM changes WHERE expiry
    ORDER BY target_id, created_at DESC, id DESC
)
UPDATE api_keys k SET
    limits_set_by = CASE WHEN l.actor_id IS DISTINCT FROM k.created_by AND l.target_id IS NOT NULL
                         THEN 'admin' END,
    allowed_models_set_by = CASE WHEN m.actor_id IS DISTINCT FROM k.created_by AND m.target_id IS NOT NULL
                                 THEN 'admin' END,
    expires_at_set_by = CASE WHEN e.actor_id IS DISTINCT FROM k.created_by AND e.target_id IS NOT NULL
                             THEN 'admin' END
FROM api_keys k0
LEFT JOIN last_limits l ON l.target_id = k0.id::text
LEFT JOIN last_models m ON m.target_id = k0.id::text
LEFT JOIN last_expiry e ON e.target_id = k0.id::text
WHERE k0.id = k.id AND (l.target_id IS NOT NULL OR m.target_id IS NOT NULL OR e.target_id IS NOT NULL);

-- Viewers hold no API keys: keys of members made viewers before this rule are revoked
-- (gateways hear of it through the usual notification), each with an audit entry.
WITH revoked AS (
    UPDATE api_keys k SET revoked_at = now()
    FROM workspace_members m
    WHERE m.workspace_id = k.workspace_id AND m.user_id = k.created_by
      AND m.role = 'viewer' AND k.revoked_at IS NULL
    RETURNING k.id, k.workspace_id, k.name, k.prefix
)
INSERT INTO audit_log (id, workspace_id, action, target_type, target_id, after)
SELECT gen_random_uuid(), workspace_id, 'api_key.revoked', 'api_key', id::text,
       jsonb_build_object('name', name, 'prefix', prefix, 'reason', 'its creator is a viewer')
FROM revoked;
