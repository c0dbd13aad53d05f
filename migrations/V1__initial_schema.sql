-- Perpetuo initial schema: accounts, workspaces, provider entries, API keys,
-- request logs (monthly partitions) and hourly usage counters.

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         text NOT NULL,
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (email);

CREATE TABLE workspaces (
    id         uuid PRIMARY KEY,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE workspace_members (
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role         text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX workspace_members_user_idx ON workspace_members (user_id, created_at);

CREATE TABLE provider_keys (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('openai', 'anthropic', 'gemini', 'openai_compatible')),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    base_url     text,
    sealed_key   bytea NOT NULL,
    key_nonce    bytea NOT NULL CHECK (length(key_nonce) = 12),
    key_version  integer NOT NULL,
    key_last4    text NOT NULL,
    priority     integer NOT NULL DEFAULT 100,
    enabled      boolean NOT NULL DEFAULT true,
    models       text[] NOT NULL DEFAULT '{}',
    model_map    jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (kind <> 'openai_compatible' OR base_url IS NOT NULL),
    UNIQUE (workspace_id, name)
);
CREATE INDEX provider_keys_workspace_priority_idx ON provider_keys (workspace_id, priority, created_at);

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    prefix       text NOT NULL,
    key_hash     bytea NOT NULL CHECK (length(key_hash) = 32),
    created_by   uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    expires_at   timestamptz
);
CREATE UNIQUE INDEX api_keys_key_hash_key ON api_keys (key_hash);
CREATE INDEX api_keys_workspace_idx ON api_keys (workspace_id, created_at DESC);

-- One row per request that reached a final state. The primary key carries the
-- partition column; the request id is a UUID v7 and created_at is the request's
-- start, so a retried insert of the same record conflicts and is ignored.
CREATE TABLE request_logs (
    id                uuid NOT NULL,
    created_at        timestamptz NOT NULL,
    workspace_id      uuid, -- null when the request was refused before a key was known
    api_key_id        uuid,
    provider_id       uuid,
    provider_name     text,
    provider_kind     text,
    route             text NOT NULL,
    model_requested   text,
    model_served      text,
    status            smallint NOT NULL,
    error_kind        text,
    streamed          boolean NOT NULL DEFAULT false,
    prompt_tokens     integer NOT NULL DEFAULT 0,
    completion_tokens integer NOT NULL DEFAULT 0,
    total_tokens      integer NOT NULL DEFAULT 0,
    cost_nusd         bigint,
    usage_source      text NOT NULL DEFAULT 'none' CHECK (usage_source IN ('provider', 'estimated', 'none')),
    latency_ms        integer NOT NULL,
    ttfb_ms           integer,
    attempts          jsonb NOT NULL DEFAULT '[]'::jsonb,
    PRIMARY KEY (created_at, id)
) PARTITION BY RANGE (created_at);

CREATE INDEX request_logs_workspace_time_idx ON request_logs (workspace_id, created_at DESC);
CREATE INDEX request_logs_workspace_provider_idx ON request_logs (workspace_id, provider_id, created_at DESC);
CREATE INDEX request_logs_workspace_model_idx ON request_logs (workspace_id, model_requested, created_at DESC);
CREATE INDEX request_logs_workspace_status_idx ON request_logs (workspace_id, status, created_at DESC);

-- Catches rows outside the monthly partitions, so a late partition never loses a row.
CREATE TABLE request_logs_default PARTITION OF request_logs DEFAULT;

-- Creates the partitions for the month of `at` and the month after; idempotent and
-- safe to call from several processes at once.
CREATE FUNCTION perpetuo_ensure_log_partitions(at timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    month_start timestamptz;
    part_name   text;
    i           integer;
BEGIN
    PERFORM pg_advisory_xact_lock(7311001);
    FOR i IN 0..1 LOOP
        month_start := date_trunc('month', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + make_interval(months => i);
        part_name := format('request_logs_y%sm%s',
                            to_char(month_start AT TIME ZONE 'UTC', 'YYYY'),
                            to_char(month_start AT TIME ZONE 'UTC', 'MM'));
        IF to_regclass(part_name) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF request_logs FOR VALUES FROM (%L) TO (%L)',
                           part_name, month_start, month_start + interval '1 month');
        END IF;
    END LOOP;
END;
$$;

SELECT perpetuo_ensure_log_partitions(now());

-- Additive per-hour counters; NULLS NOT DISTINCT lets a request that reached no
-- provider entry still count under one row.
CREATE TABLE usage_counters (
    workspace_id      uuid NOT NULL,
    bucket            timestamptz NOT NULL,
    api_key_id        uuid,
    provider_id       uuid,
    model             text NOT NULL DEFAULT '',
    requests          bigint NOT NULL DEFAULT 0,
    errors            bigint NOT NULL DEFAULT 0,
    prompt_tokens     bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    total_tokens      bigint NOT NULL DEFAULT 0,
    cost_nusd         bigint NOT NULL DEFAULT 0,
    CONSTRAINT usage_counters_key UNIQUE NULLS NOT DISTINCT (workspace_id, bucket, api_key_id, provider_id, model)
);

-- Change notifications for gateways: one channel, payload says what changed.
CREATE FUNCTION perpetuo_notify_api_keys() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
    PERFORM pg_notify('perpetuo_invalidate',
        json_build_object('table', 'api_keys', 'key_hash', encode(r.key_hash, 'hex'),
                          'workspace_id', r.workspace_id)::text);
    IF TG_OP = 'UPDATE' AND OLD.key_hash <> NEW.key_hash THEN
        PERFORM pg_notify('perpetuo_invalidate',
            json_build_object('table', 'api_keys', 'key_hash', encode(OLD.key_hash, 'hex'),
                              'workspace_id', OLD.workspace_id)::text);
    END IF;
    RETURN NULL;
END;
$$;

-- last_used_at is written in batches by gateways and changes nothing they cache.
CREATE TRIGGER api_keys_notify
AFTER INSERT OR DELETE OR UPDATE OF key_hash, revoked_at, expires_at, workspace_id ON api_keys
FOR EACH ROW EXECUTE FUNCTION perpetuo_notify_api_keys();

CREATE FUNCTION perpetuo_notify_provider_keys() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
    PERFORM pg_notify('perpetuo_invalidate',
        json_build_object('table', 'provider_keys', 'workspace_id', r.workspace_id)::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER provider_keys_notify
AFTER INSERT OR UPDATE OR DELETE ON provider_keys
FOR EACH ROW EXECUTE FUNCTION perpetuo_notify_provider_keys();
