-- Routing made visible: what each gateway knows of the keys it used, and in each log row
-- the pool key that served and what was skipped on the way.

-- What each gateway knows of each key it used lately: its breaker and the headroom the
-- provider's rate-limit headers reported. Gateways write their own rows every few seconds
-- (one row per key per gateway, replaced in place) and delete rows nobody refreshed for
-- five minutes; the admin API reads the fresh ones. `key_id` is a pool key's id, or the
-- entry's id for an entry without keys.
CREATE UNLOGGED TABLE gateway_key_status (
    gateway_id         uuid NOT NULL,
    key_id             uuid NOT NULL,
    entry_id           uuid NOT NULL,
    workspace_id       uuid NOT NULL,
    breaker            text NOT NULL CONSTRAINT gateway_key_status_breaker_known
        CHECK (breaker IN ('closed', 'open', 'half_open')),
    remaining_requests bigint,
    remaining_tokens   bigint,
    reset_at           timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, key_id, gateway_id)
);
CREATE INDEX gateway_key_status_updated_idx ON gateway_key_status (updated_at);

-- Log rows name the pool key that served (by id and by label, the label as it was) and
-- the entries or keys skipped on the way, with why: [{"entry": name, "key": label?,
-- "reason": "quota" | "breaker" | "weight"}].
ALTER TABLE request_logs
    ADD COLUMN provider_key_id uuid,
    ADD COLUMN provider_key_label text,
    ADD COLUMN skipped jsonb;
