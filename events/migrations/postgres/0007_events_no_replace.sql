-- In step with SQLite's 0007, which refuses inserts that would replace a stored
-- event. PostgreSQL has no REPLACE: an insert that collides with a stored event
-- fails on the key, and an upsert's `ON CONFLICT DO UPDATE` fires the UPDATE
-- trigger of 0001. Nothing to add; the migration keeps the numbering in step.
SELECT 1;
