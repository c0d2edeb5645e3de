-- Responses to writes sent with an Idempotency-Key.
--
-- Why: a client that retries a write (after a timeout, say) with the same key and
-- body must get the first response back and change nothing. The event store
-- already refuses to append twice; this table lets the API answer the retry with
-- exactly the first response. Keys are scoped to the session (the token's hash).

CREATE TABLE http_idempotency (
    token_hash   BLOB    NOT NULL,
    key          TEXT    NOT NULL,
    fingerprint  BLOB    NOT NULL,
    status       INTEGER NOT NULL,
    content_type TEXT,
    body         BLOB    NOT NULL,
    created_at   TEXT    NOT NULL,
    PRIMARY KEY (token_hash, key)
) WITHOUT ROWID;
