-- Tracing: each log row keeps its request's W3C trace id (32 lowercase hex digits), so a
-- trace leads to its row and a row to its trace; a workspace may let message content into
-- the spans it exports (off unless it opts in).

ALTER TABLE request_logs
    ADD COLUMN trace_id text CONSTRAINT request_logs_trace_id_length CHECK (length(trace_id) = 32);

ALTER TABLE workspaces ADD COLUMN tracing_capture_content boolean NOT NULL DEFAULT false;

-- The setting travels with a workspace's entries in every gateway's entry cache, as the
-- routing (V16) and cache (V17) settings do.
CREATE TRIGGER workspaces_tracing_notify
AFTER UPDATE OF tracing_capture_content ON workspaces
FOR EACH ROW
WHEN (OLD.tracing_capture_content IS DISTINCT FROM NEW.tracing_capture_content)
EXECUTE FUNCTION perpetuo_notify_workspace_routing();
