-- The event log and its bookkeeping.
--
-- Why: every action of the CRM is an immutable event. `events` is append-only,
-- enforced here by triggers, not only by the code. `streams` holds each stream's
-- version for optimistic concurrency; `site_chains` the head of each site's hash
-- chain (so removing a site's last events is detected); `event_log_head` the last
-- position, whose row every appending transaction locks first so that positions
-- commit in order (a plain sequence can commit 7 before 6, and a reader would skip
-- 6); `idempotency_keys` the first result of appends made with a key.
--
-- The payload is TEXT, not JSONB: the hash chain covers its exact bytes.

CREATE TABLE events (
    position         BIGINT      PRIMARY KEY,
    event_id         UUID        NOT NULL UNIQUE,
    site_id          UUID        NOT NULL,
    stream_type      TEXT        NOT NULL,
    stream_id        UUID        NOT NULL,
    stream_version   BIGINT      NOT NULL,
    event_type       TEXT        NOT NULL,
    schema_version   INT         NOT NULL,
    payload          TEXT        NOT NULL,
    actor_id         UUID        NOT NULL,
    subject_id       UUID        NOT NULL,
    impersonation_id UUID,
    correlation_id   UUID        NOT NULL,
    causation_id     UUID,
    idempotency_key  TEXT,
    recorded_at      TIMESTAMPTZ NOT NULL,
    prev_hash        BYTEA       NOT NULL,
    hash             BYTEA       NOT NULL,
    UNIQUE (stream_type, stream_id, stream_version)
);

CREATE INDEX events_site_position ON events (site_id, position);

CREATE FUNCTION events_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER events_no_update_or_delete BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_reject_change();

CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_reject_change();

CREATE TABLE streams (
    stream_type TEXT   NOT NULL,
    stream_id   UUID   NOT NULL,
    site_id     UUID   NOT NULL,
    version     BIGINT NOT NULL,
    PRIMARY KEY (stream_type, stream_id)
);

CREATE TABLE site_chains (
    site_id       UUID   PRIMARY KEY,
    last_position BIGINT NOT NULL,
    last_hash     BYTEA  NOT NULL,
    event_count   BIGINT NOT NULL
);

CREATE TABLE idempotency_keys (
    site_id     UUID  NOT NULL,
    key         TEXT  NOT NULL,
    fingerprint BYTEA NOT NULL,
    outcome     TEXT  NOT NULL,
    PRIMARY KEY (site_id, key)
);

CREATE TABLE event_log_head (
    id            INT    PRIMARY KEY CHECK (id = 1),
    last_position BIGINT NOT NULL
);

INSERT INTO event_log_head (id, last_position) VALUES (1, 0);
