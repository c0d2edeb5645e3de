-- Signed digests of each site's log (see the events crate's `digest` module): one
-- row a digest, `digest` its whole signed statement as written to its file.
-- Append-only like the log: a digest is never rewritten nor removed.
CREATE TABLE audit_digests (
    site_id UUID NOT NULL,
    seq BIGINT NOT NULL,
    to_position BIGINT NOT NULL,
    digest TEXT NOT NULL,
    PRIMARY KEY (site_id, seq)
);

CREATE FUNCTION audit_digests_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'digests are append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_digests_no_update_or_delete BEFORE UPDATE OR DELETE ON audit_digests
    FOR EACH ROW EXECUTE FUNCTION audit_digests_reject_change();

CREATE TRIGGER audit_digests_no_truncate BEFORE TRUNCATE ON audit_digests
    FOR EACH STATEMENT EXECUTE FUNCTION audit_digests_reject_change();
