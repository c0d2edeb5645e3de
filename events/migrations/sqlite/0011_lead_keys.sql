-- Each lead's key, sealed with the master key (see the events crate's `vault`
-- module). Erasing a lead destroys its key: `sealed_key` becomes NULL and
-- `erased_at` says when; the row stays, so that an erased lead is never given a
-- new key. A lead without a row has events from before sealing only.
CREATE TABLE lead_keys (
    lead_id    BLOB    NOT NULL PRIMARY KEY,
    site_id    BLOB    NOT NULL,
    sealed_key BLOB,
    erased_at  TEXT
) WITHOUT ROWID;

-- Proof of which master key seals this database's lead keys: a wrong or lost
-- master key is refused at start, never used to read garbage.
CREATE TABLE master_key (
    id     INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    key_id TEXT    NOT NULL,
    proof  BLOB    NOT NULL
);
