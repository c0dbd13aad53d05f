-- Every logged request updated five B-trees: the primary key and four per-workspace
-- indexes. The log listing filters by provider, model or status only within one
-- workspace's time range, which (workspace_id, created_at DESC) serves on its own, so the
-- three narrower indexes cost every insert and bought little. Dropping them on the
-- partitioned table drops them on every partition.
DROP INDEX IF EXISTS request_logs_workspace_provider_idx;
DROP INDEX IF EXISTS request_logs_workspace_model_idx;
DROP INDEX IF EXISTS request_logs_workspace_status_idx;
