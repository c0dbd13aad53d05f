-- Responses stored by the gateway's OpenAI Responses API (`store`, the default), per
-- workspace, for `GET /v1/responses/{id}`, its input items and `previous_response_id`.
CREATE TABLE stored_responses (
    id            text        PRIMARY KEY,
    workspace_id  uuid        NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    api_key_id    uuid        REFERENCES api_keys (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    -- The Response object as the client received it.
    response      jsonb       NOT NULL,
    -- This response's input items, in the Responses API's shape.
    input_items   jsonb       NOT NULL,
    -- The whole conversation through this answer, as chat messages, replayed for a
    -- request that names this response as its `previous_response_id`.
    conversation  jsonb       NOT NULL
);

CREATE INDEX stored_responses_expiry ON stored_responses (expires_at);
