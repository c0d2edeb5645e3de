-- Responses to writes sent with an Idempotency-Key.
--
-- Why: a client that retries a write (after a timeout, say) with the same key and
-- body must get the first response back and change nothing. The event store
-- already refuses to append twice; this table lets the API answer the retry with
-- exactly the first response. Keys are scoped to the session (the token's hash).

CREATE TABLE http_idempotency (
    token_hash   BYTEA       NOT NULL,
    key          TEXT        NOT NULL,
    fingerprint  BYTEA       NOT NULL,
    status       BIGINT      NOT NULL,
    content_type TEXT,
    body         BYTEA       NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (token_hash, key)
);
