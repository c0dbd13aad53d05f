-- Teams: a viewer role, invitations, email verification and password-reset tokens, an
-- audit log of admin changes, and deleted workspaces whose logs are kept for a while.

ALTER TABLE workspace_members DROP CONSTRAINT workspace_members_role_check;
ALTER TABLE workspace_members
    ADD CONSTRAINT workspace_members_role_check CHECK (role IN ('owner', 'admin', 'member', 'viewer'));

-- Accounts that existed before verification was introduced count as verified.
ALTER TABLE users
    ADD COLUMN email_verified_at    timestamptz,
    ADD COLUMN verification_sent_at timestamptz;
UPDATE users SET email_verified_at = created_at;

-- A pending invitation has neither accepted_at nor revoked_at; its token is stored as
-- SHA-256 only. One pending invitation per workspace and email: a new one replaces it.
CREATE TABLE invitations (
    id           uuid PRIMARY KEY,
    workspace_id uuid NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    email        text NOT NULL CHECK (length(email) <= 254),
    role         text NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
    token_hash   bytea NOT NULL CHECK (length(token_hash) = 32),
    invited_by   uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    accepted_at  timestamptz,
    accepted_by  uuid REFERENCES users (id) ON DELETE SET NULL,
    revoked_at   timestamptz
);
CREATE UNIQUE INDEX invitations_token_hash_key ON invitations (token_hash);
CREATE UNIQUE INDEX invitations_pending_key ON invitations (workspace_id, email)
    WHERE accepted_at IS NULL AND revoked_at IS NULL;

-- Single-use account tokens sent by email (verification, password reset), SHA-256 only.
CREATE TABLE account_tokens (
    token_hash bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose    text NOT NULL CHECK (purpose IN ('verify_email', 'reset_password')),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
CREATE INDEX account_tokens_user_idx ON account_tokens (user_id, purpose);

-- Every change made through the admin API. No foreign keys: entries outlive the users
-- and workspaces they name, until a deleted workspace's data is purged.
CREATE TABLE audit_log (
    id           uuid PRIMARY KEY,
    created_at   timestamptz NOT NULL DEFAULT now(),
    workspace_id uuid,
    actor_id     uuid,
    actor_email  text,
    ip           inet,
    action       text NOT NULL,
    target_type  text,
    target_id    text,
    before       jsonb,
    after        jsonb
);
CREATE INDEX audit_log_workspace_time_idx ON audit_log (workspace_id, created_at DESC, id DESC);
CREATE INDEX audit_log_actor_time_idx ON audit_log (actor_id, created_at DESC);

-- A deleted workspace's logs, counters and audit entries stay until the admin API's
-- purge drops them after the configured retention.
CREATE TABLE deleted_workspaces (
    id         uuid PRIMARY KEY,
    name       text NOT NULL,
    deleted_by uuid,
    deleted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deleted_workspaces_time_idx ON deleted_workspaces (deleted_at);
