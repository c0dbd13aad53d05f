-- Admin sessions: one per login or signup. Access tokens name their session (`sid`), so
-- revoking a session ends its access tokens as well as its refresh token.
CREATE TABLE admin_sessions (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX admin_sessions_user_idx ON admin_sessions (user_id);

-- Every refresh token a session was given, by SHA-256 only. The live one has no used_at;
-- presenting one that was already used means it was copied, and ends its session.
CREATE TABLE admin_refresh_tokens (
    token_hash  bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    session_id  uuid NOT NULL REFERENCES admin_sessions (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    used_at     timestamptz
);
CREATE INDEX admin_refresh_tokens_session_idx ON admin_refresh_tokens (session_id);
