-- Each lead's key, sealed with the master key (see the events crate's `vault`
-- module). Erasing a lead destroys its key: `sealed_key` becomes NULL and
-- `erased_at` says when; the row stays, so that an erased lead is never given a
-- new key. A lead without a row has events from before sealing only. The old
-- row version holding the key is gone from the table's files once VACUUM has run
-- (`crm lead erase` runs it).
CREATE TABLE lead_keys (
    lead_id    UUID NOT NULL PRIMARY KEY,
    site_id    UUID NOT NULL,
    sealed_key BYTEA,
    erased_at  TIMESTAMPTZ
);

-- Proof of which master key seals this database's lead keys: a wrong or lost
-- master key is refused at start, never used to read garbage.
CREATE TABLE master_key (
    id     INT   NOT NULL PRIMARY KEY CHECK (id = 1),
    key_id TEXT  NOT NULL,
    proof  BYTEA NOT NULL
);
