-- Refuse every insert that would replace a stored event.
--
-- Why: `REPLACE INTO events` and `INSERT OR REPLACE INTO events` remove the row
-- they collide with (on the position, the event id or the stream version) and
-- insert theirs, and SQLite fires DELETE triggers for such removals only when the
-- connection has turned `recursive_triggers` on: a setting of whoever connects, not
-- of the database. So `events_no_delete` alone let a payload be rewritten. This
-- trigger refuses any insert that collides with a stored event, whatever the
-- statement's conflict clause or the connection's settings. (An upsert's
-- `ON CONFLICT DO UPDATE` is an UPDATE, refused by `events_no_update`.) The store
-- recognises this refusal as the unique-key collision it stands for.

CREATE TRIGGER events_no_replace BEFORE INSERT ON events
WHEN EXISTS (SELECT 1 FROM events WHERE position = NEW.position)
  OR EXISTS (SELECT 1 FROM events WHERE event_id = NEW.event_id)
  OR EXISTS (SELECT 1 FROM events WHERE stream_type = NEW.stream_type
             AND stream_id = NEW.stream_id AND stream_version = NEW.stream_version)
BEGIN
    SELECT RAISE(ABORT, 'events are append-only: an insert may not replace a stored event');
END;
