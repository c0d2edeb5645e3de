-- What a session needs so that its impersonation's end is recorded on time.
--
-- Why: an impersonation ends at its expiry whether or not the admin makes another
-- request, and the server records it then. `impersonation_expires_at` lets the
-- servers find the sessions whose impersonation is due without reading the log;
-- `last_impersonation_id` stays after the impersonation ends, so a request that
-- says it acts as the agent (`Acting-As`) after that is told how and when it
-- ended, instead of being applied as the admin. Both are written in the
-- transaction that appends the start (and, for the first, the end).
-- `impersonation_revoked_at` is set in the transaction of the change that
-- withdraws the right (a deactivation, a demotion, the site switching it off),
-- before the revocation's own `ImpersonationEnded` is appended: from that
-- moment no write made in the impersonation commits. Every write made while
-- logged in as someone checks, in its own transaction, that its session still
-- holds the impersonation and that it is not revoked.
-- `credentials.active` follows the account's activation, written with
-- `UserDeactivated` and `UserReactivated`: a sign-in opens its session only while
-- it holds, so a sign-in decided just before a deactivation cannot leave a
-- session open after it (appends commit one at a time, and the second sees the
-- first).

ALTER TABLE sessions ADD COLUMN impersonation_expires_at TIMESTAMPTZ;
ALTER TABLE credentials ADD COLUMN active BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE sessions ADD COLUMN impersonation_revoked_at TIMESTAMPTZ;
ALTER TABLE sessions ADD COLUMN last_impersonation_id UUID;

CREATE INDEX sessions_impersonating ON sessions (impersonation_id)
    WHERE impersonation_id IS NOT NULL;
