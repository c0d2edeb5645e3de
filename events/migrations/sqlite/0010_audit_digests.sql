-- Signed digests of each site's log (see the events crate's `digest` module): one
-- row a digest, `digest` its whole signed statement as written to its file.
-- Append-only like the log: a digest is never rewritten nor removed, and an insert
-- of a digest already there (another server's, at the same moment) is skipped.
CREATE TABLE audit_digests (
    site_id     BLOB    NOT NULL,
    seq         INTEGER NOT NULL,
    to_position INTEGER NOT NULL,
    digest      TEXT    NOT NULL,
    PRIMARY KEY (site_id, seq)
) WITHOUT ROWID;

CREATE TRIGGER audit_digests_no_update BEFORE UPDATE ON audit_digests
BEGIN
    SELECT RAISE(ABORT, 'digests are append-only: UPDATE is not allowed');
END;

CREATE TRIGGER audit_digests_no_delete BEFORE DELETE ON audit_digests
BEGIN
    SELECT RAISE(ABORT, 'digests are append-only: DELETE is not allowed');
END;

CREATE TRIGGER audit_digests_no_replace BEFORE INSERT ON audit_digests
WHEN EXISTS (SELECT 1 FROM audit_digests WHERE site_id = NEW.site_id AND seq = NEW.seq)
BEGIN
    SELECT RAISE(IGNORE);
END;
