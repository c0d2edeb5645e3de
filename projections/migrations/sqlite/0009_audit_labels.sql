-- The names the audit trail shows for what it lists: a lead's or template's name,
-- a user's or site's name, kept by the audit trail's own fold with the position
-- from which each name held, so a change reads "Dana Novak" instead of an id, a
-- template that was deleted keeps the name it had, and an export up to a position
-- shows the names as they were then (the same bytes however often it is made). A
-- user's settings take the user's id, so they read with the user's name.
CREATE TABLE audit_labels (
    labelled_id BLOB    NOT NULL,
    position    INTEGER NOT NULL,
    label       TEXT    NOT NULL,
    PRIMARY KEY (labelled_id, position)
) WITHOUT ROWID;
