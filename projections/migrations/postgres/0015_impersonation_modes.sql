-- A "Log in as user" session may be view only: the audit trail says which. Sessions
-- recorded before there were modes could edit.
ALTER TABLE audit_sessions ADD COLUMN mode TEXT NOT NULL DEFAULT 'edit';
