-- A lead whose personal data was erased: its name, email and phone are blank (as
-- are its notes', tasks' and communications' texts), and read as null.
ALTER TABLE leads_view ADD COLUMN erased BOOLEAN NOT NULL DEFAULT false;
