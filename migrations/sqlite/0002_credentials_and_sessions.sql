-- Credentials and sessions.
--
-- Why: secrets never enter the event log. The log records that a password changed
-- or that someone signed in; the password hash lives here. Sessions are server-side:
-- the bearer token is random (256 bits) and only its SHA-256 is stored, so a copy of
-- this table does not let anyone sign in. An impersonation belongs to the admin's
-- session row: the agent signing in never sees or resumes it.

CREATE TABLE credentials (
    user_id       BLOB PRIMARY KEY,
    site_id       BLOB NOT NULL,
    email         TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE sessions (
    token_hash               BLOB PRIMARY KEY,
    user_id                  BLOB NOT NULL,
    site_id                  BLOB NOT NULL,
    created_at               TEXT NOT NULL,
    expires_at               TEXT NOT NULL,
    ended_at                 TEXT,
    impersonation_id         BLOB,
    impersonated_user_id     BLOB
) WITHOUT ROWID;

CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_impersonated_user ON sessions (impersonated_user_id)
    WHERE impersonated_user_id IS NOT NULL;
