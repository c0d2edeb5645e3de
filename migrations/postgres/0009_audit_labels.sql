-- The names the audit trail shows for what it lists: a lead's or template's name,
-- a user's or site's name, kept by the audit trail's own fold (the last name
-- each had), so a change reads "Dana Novak" instead of an id, and a template
-- that was deleted keeps the name it had. A user's settings take the user's id,
-- so they read with the user's name.
CREATE TABLE audit_labels (
    labelled_id UUID PRIMARY KEY,
    label TEXT NOT NULL
);
