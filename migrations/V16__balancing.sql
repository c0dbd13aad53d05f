-- Balancing within a priority: each entry has a weight (0 = standby, used only when the
-- others of its priority fail), and each workspace chooses how a priority's entries
-- share its traffic: `weighted` (smooth weighted round robin) or `latency` (power of two
-- choices on each entry's peak-EWMA time to first content), and whether a conversation
-- (or a `user`) sticks to one entry while it is healthy.

ALTER TABLE provider_keys ADD COLUMN weight integer NOT NULL DEFAULT 1
    CONSTRAINT provider_keys_weight_range CHECK (weight BETWEEN 0 AND 1000);

ALTER TABLE workspaces ADD COLUMN routing_strategy text NOT NULL DEFAULT 'weighted'
    CONSTRAINT workspaces_routing_strategy_known CHECK (routing_strategy IN ('weighted', 'latency'));
ALTER TABLE workspaces ADD COLUMN routing_sticky boolean NOT NULL DEFAULT false;

-- The routing settings travel with a workspace's entries in every gateway's entry cache: a change
-- refreshes that workspace's entries, as an entry change does.
CREATE FUNCTION perpetuo_notify_workspace_routing() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('perpetuo_invalidate',
        json_build_object('table', 'provider_keys', 'workspace_id', NEW.id)::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER workspaces_routing_notify
AFTER UPDATE OF routing_strategy, routing_sticky ON workspaces
FOR EACH ROW
WHEN ((OLD.routing_strategy, OLD.routing_sticky) IS DISTINCT FROM
      (NEW.routing_strategy, NEW.routing_sticky))
EXECUTE FUNCTION perpetuo_notify_workspace_routing();
