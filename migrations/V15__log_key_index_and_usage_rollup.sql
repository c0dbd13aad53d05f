-- Reads that stay fast as a workspace's data grows (bench/run.sh --sections growth).
--
-- The log listing filtered by API key: (workspace_id, created_at DESC) alone walks the
-- workspace's rows newest first until it has a page of the key's, which for a key with few
-- requests is every row of the workspace (0.7 s at a million rows, growing with them). Key
-- ids are unique across workspaces, so the key and the time order are enough.
CREATE INDEX request_logs_key_time_idx ON request_logs (api_key_id, created_at DESC);

-- Usage per workspace, provider entry, model and hour: what the usage reports (totals,
-- series, by provider) sum. `usage_counters` has a row per API key as well, which with
-- thousands of active keys is nearly a row per request (0.9 million for a million requests
-- over 90 days: 0.4 to 0.6 s to sum); here an hour holds a row per entry and model. The log
-- writer adds to both in the same transaction, so both equal the sums over the rows (a
-- gateway older than this migration adds to usage_counters only: upgrade gateways with it).
CREATE TABLE usage_rollup (
    workspace_id      uuid NOT NULL,
    bucket            timestamptz NOT NULL,
    provider_id       uuid,
    model             text NOT NULL DEFAULT '',
    requests          bigint NOT NULL DEFAULT 0,
    errors            bigint NOT NULL DEFAULT 0,
    prompt_tokens     bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    total_tokens      bigint NOT NULL DEFAULT 0,
    cost_nusd         bigint NOT NULL DEFAULT 0,
    CONSTRAINT usage_rollup_key UNIQUE NULLS NOT DISTINCT (workspace_id, bucket, provider_id, model)
);

INSERT INTO usage_rollup (workspace_id, bucket, provider_id, model, requests, errors, prompt_tokens,
                          completion_tokens, total_tokens, cost_nusd)
SELECT workspace_id, bucket, provider_id, model, sum(requests), sum(errors), sum(prompt_tokens),
       sum(completion_tokens), sum(total_tokens), sum(cost_nusd)
FROM usage_counters
GROUP BY workspace_id, bucket, provider_id, model;
