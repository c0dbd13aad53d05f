-- Stored Responses become a chain of turns. Until now each row kept the whole conversation
-- through its answer, so continuing one large response N times stored N copies of it. From
-- here a row keeps only what its turn added — the Response object, its input items, and
-- the turn as chat messages (`turn`: the input's messages and the answer) — and a link to
-- the turn it continues. A conversation is read by walking the links back; its size
-- (`conversation_bytes`, the parent's plus this turn's) and length (`depth`) are kept on
-- each turn so the gateway checks its cap without reading it. `turn` is NULL when the
-- conversation through this answer passed the cap: it cannot be continued, so its
-- messages are not kept.
--
-- A turn that later turns continue stays while they need it: a deleted or expired one is
-- hidden (`expires_at` in the past; a deleted one also loses its Response and input items)
-- and goes once no turn continues it any more.
ALTER TABLE stored_responses
    ADD COLUMN previous_response_id text REFERENCES stored_responses (id),
    ADD COLUMN turn                 jsonb,
    ADD COLUMN depth                integer NOT NULL DEFAULT 1,
    ADD COLUMN conversation_bytes   bigint  NOT NULL DEFAULT 0,
    -- What this row holds, in bytes of JSON: counted against its workspace's quota.
    ADD COLUMN stored_bytes         bigint  NOT NULL DEFAULT 0;

-- Rows of the earlier format keep working: each becomes a first turn holding the whole
-- conversation it had, so it reads and continues exactly as before. A row whose
-- conversation was not kept (JSON null: it outgrew the limit) still cannot be continued.
-- Gateways of an earlier build write and read the dropped `conversation` column: once
-- this has run they store no response and continue none until they are upgraded too.
UPDATE stored_responses SET
    turn = CASE WHEN jsonb_typeof(conversation) = 'array' THEN conversation END,
    conversation_bytes = CASE WHEN jsonb_typeof(conversation) = 'array'
                              THEN octet_length(conversation::text) ELSE 0 END,
    stored_bytes = octet_length(response::text) + octet_length(input_items::text)
                   + CASE WHEN jsonb_typeof(conversation) = 'array'
                          THEN octet_length(conversation::text) ELSE 0 END;

ALTER TABLE stored_responses
    DROP COLUMN conversation,
    ALTER COLUMN depth DROP DEFAULT,
    ALTER COLUMN conversation_bytes DROP DEFAULT,
    ALTER COLUMN stored_bytes DROP DEFAULT;

-- The purge removes a turn only once nothing continues it.
CREATE INDEX stored_responses_previous ON stored_responses (previous_response_id)
    WHERE previous_response_id IS NOT NULL;

-- Bytes stored per workspace, kept by the triggers below on every insert, update and
-- delete (the gateway's own, the purge, a workspace's deletion), so the quota is read
-- from one row instead of summed.
CREATE TABLE stored_response_bytes (
    workspace_id uuid   PRIMARY KEY REFERENCES workspaces (id) ON DELETE CASCADE,
    bytes        bigint NOT NULL
);

INSERT INTO stored_response_bytes (workspace_id, bytes)
SELECT workspace_id, sum(stored_bytes) FROM stored_responses GROUP BY workspace_id;

-- Statement-level, over the rows the statement changed; workspaces are visited in id
-- order, so two statements touching several workspaces never lock their counters in
-- opposite orders.
CREATE FUNCTION perpetuo_stored_response_bytes_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    d record;
BEGIN
    FOR d IN
        SELECT workspace_id, sum(stored_bytes) AS delta FROM new_rows
        GROUP BY workspace_id ORDER BY workspace_id
    LOOP
        CONTINUE WHEN d.delta = 0;
        INSERT INTO stored_response_bytes AS b (workspace_id, bytes)
        VALUES (d.workspace_id, d.delta)
        ON CONFLICT (workspace_id) DO UPDATE SET bytes = b.bytes + excluded.bytes;
    END LOOP;
    RETURN NULL;
END;
$$;

CREATE FUNCTION perpetuo_stored_response_bytes_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    d record;
BEGIN
    FOR d IN
        SELECT workspace_id, sum(stored_bytes) AS delta FROM old_rows
        GROUP BY workspace_id ORDER BY workspace_id
    LOOP
        -- A workspace being deleted has lost its row already: nothing to update.
        UPDATE stored_response_bytes SET bytes = bytes - d.delta
        WHERE workspace_id = d.workspace_id;
    END LOOP;
    RETURN NULL;
END;
$$;

CREATE FUNCTION perpetuo_stored_response_bytes_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    d record;
BEGIN
    FOR d IN
        SELECT workspace_id, sum(delta) AS delta FROM (
            SELECT workspace_id, stored_bytes AS delta FROM new_rows
            UNION ALL
            SELECT workspace_id, -stored_bytes FROM old_rows
        ) changed
        GROUP BY workspace_id ORDER BY workspace_id
    LOOP
        CONTINUE WHEN d.delta = 0;
        UPDATE stored_response_bytes SET bytes = bytes + d.delta
        WHERE workspace_id = d.workspace_id;
    END LOOP;
    RETURN NULL;
END;
$$;

CREATE TRIGGER stored_response_bytes_insert AFTER INSERT ON stored_responses
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION perpetuo_stored_response_bytes_insert();

CREATE TRIGGER stored_response_bytes_delete AFTER DELETE ON stored_responses
REFERENCING OLD TABLE AS old_rows
FOR EACH STATEMENT EXECUTE FUNCTION perpetuo_stored_response_bytes_delete();

CREATE TRIGGER stored_response_bytes_update AFTER UPDATE ON stored_responses
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION perpetuo_stored_response_bytes_update();
