-- Key pools: an entry holds zero or more provider keys, each sealed as before (bound to
-- its entry: the associated data names the entry, not the key) with its own label, weight
-- and switch. The keys move out of the entry's row into their own table; an entry without
-- keys (a local server that needs none) simply has no row here. An entry may also declare
-- its own quota (a deployment's fixed requests and tokens per minute).

-- A key belongs to its entry's workspace: the pair is what the key references.
ALTER TABLE provider_keys ADD CONSTRAINT provider_keys_id_workspace_key UNIQUE (id, workspace_id);

CREATE TABLE provider_entry_keys (
    id           uuid PRIMARY KEY,
    entry_id     uuid NOT NULL,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    label        text NOT NULL CONSTRAINT provider_entry_keys_label_length CHECK (length(label) BETWEEN 1 AND 100),
    weight       integer NOT NULL DEFAULT 1
        CONSTRAINT provider_entry_keys_weight_range CHECK (weight BETWEEN 0 AND 1000),
    enabled      boolean NOT NULL DEFAULT true,
    sealed_key   bytea NOT NULL,
    key_nonce    bytea NOT NULL CHECK (length(key_nonce) = 12),
    key_version  integer NOT NULL,
    aad_version  smallint NOT NULL DEFAULT 2 CHECK (aad_version IN (1, 2)),
    key_last4    text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT provider_entry_keys_entry_label_key UNIQUE (entry_id, label),
    CONSTRAINT provider_entry_keys_entry_fkey FOREIGN KEY (entry_id, workspace_id)
        REFERENCES provider_keys (id, workspace_id) ON DELETE CASCADE
);
CREATE INDEX provider_entry_keys_entry_idx ON provider_entry_keys (entry_id, created_at, id);
CREATE INDEX provider_entry_keys_workspace_idx ON provider_entry_keys (workspace_id);

-- Every entry that had a key keeps it as a pool of one, labelled "default"; its id is the
-- entry's (the key is bound to the entry, so nothing is re-sealed). Keyless entries
-- (an empty key until now) get no row.
INSERT INTO provider_entry_keys (id, entry_id, workspace_id, label, weight, enabled, sealed_key,
                                 key_nonce, key_version, aad_version, key_last4, created_at, updated_at)
SELECT id, id, workspace_id, 'default', 1, true, sealed_key, key_nonce, key_version, aad_version,
       key_last4, created_at, updated_at
FROM provider_keys
WHERE key_last4 <> '';

ALTER TABLE provider_keys
    DROP COLUMN sealed_key,
    DROP COLUMN key_nonce,
    DROP COLUMN key_version,
    DROP COLUMN aad_version,
    DROP COLUMN key_last4,
    ADD COLUMN quota_rpm integer CONSTRAINT provider_keys_quota_rpm_range CHECK (quota_rpm BETWEEN 1 AND 1000000000),
    ADD COLUMN quota_tpm bigint CONSTRAINT provider_keys_quota_tpm_range CHECK (quota_tpm BETWEEN 1 AND 1000000000000);

-- A key's change refreshes its workspace's entries in every gateway, as an entry's does.
CREATE TRIGGER provider_entry_keys_notify
AFTER INSERT OR UPDATE OR DELETE ON provider_entry_keys
FOR EACH ROW EXECUTE FUNCTION perpetuo_notify_provider_keys();
