-- The event log and its bookkeeping.
--
-- Why: every action of the CRM is an immutable event. `events` is append-only,
-- enforced here by triggers, not only by the code. `streams` holds each stream's
-- version for optimistic concurrency; `site_chains` the head of each site's hash
-- chain (so removing a site's last events is detected); `event_log_head` the last
-- position, whose row every appending transaction locks first so that positions
-- commit in order; `idempotency_keys` the first result of appends made with a key.

CREATE TABLE events (
    position         INTEGER PRIMARY KEY,   -- the rowid: in-order scans are sequential
    event_id         BLOB    NOT NULL UNIQUE,
    site_id          BLOB    NOT NULL,
    stream_type      TEXT    NOT NULL,
    stream_id        BLOB    NOT NULL,
    stream_version   INTEGER NOT NULL,
    event_type       TEXT    NOT NULL,
    schema_version   INTEGER NOT NULL,
    payload          TEXT    NOT NULL,
    actor_id         BLOB    NOT NULL,
    subject_id       BLOB    NOT NULL,
    impersonation_id BLOB,
    correlation_id   BLOB    NOT NULL,
    causation_id     BLOB,
    idempotency_key  TEXT,
    recorded_at      TEXT    NOT NULL,
    prev_hash        BLOB    NOT NULL,
    hash             BLOB    NOT NULL,
    UNIQUE (stream_type, stream_id, stream_version)
);

CREATE INDEX events_site_position ON events (site_id, position);

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: UPDATE is not allowed');
END;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: DELETE is not allowed');
END;

CREATE TABLE streams (
    stream_type TEXT    NOT NULL,
    stream_id   BLOB    NOT NULL,
    site_id     BLOB    NOT NULL,
    version     INTEGER NOT NULL,
    PRIMARY KEY (stream_type, stream_id)
) WITHOUT ROWID;

CREATE TABLE site_chains (
    site_id       BLOB    PRIMARY KEY,
    last_position INTEGER NOT NULL,
    last_hash     BLOB    NOT NULL,
    event_count   INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE idempotency_keys (
    site_id     BLOB NOT NULL,
    key         TEXT NOT NULL,
    fingerprint BLOB NOT NULL,
    outcome     TEXT NOT NULL,
    PRIMARY KEY (site_id, key)
) WITHOUT ROWID;

CREATE TABLE event_log_head (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    last_position INTEGER NOT NULL
);

INSERT INTO event_log_head (id, last_position) VALUES (1, 0);
