-- Credentials and sessions.
--
-- Why: secrets never enter the event log. The log records that a password changed
-- or that someone signed in; the password hash lives here. Sessions are server-side:
-- the bearer token is random (256 bits) and only its SHA-256 is stored, so a copy of
-- this table does not let anyone sign in. An impersonation belongs to the admin's
-- session row: the agent signing in never sees or resumes it. Every server reads
-- sessions from here, so a session is valid on all of them.

CREATE TABLE credentials (
    user_id       UUID PRIMARY KEY,
    site_id       UUID NOT NULL,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL
);

CREATE TABLE sessions (
    token_hash           BYTEA       PRIMARY KEY,
    user_id              UUID        NOT NULL,
    site_id              UUID        NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL,
    expires_at           TIMESTAMPTZ NOT NULL,
    ended_at             TIMESTAMPTZ,
    impersonation_id     UUID,
    impersonated_user_id UUID
);

CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_impersonated_user ON sessions (impersonated_user_id)
    WHERE impersonated_user_id IS NOT NULL;
