-- Every user a lead was ever assigned to, from the position it first was: the
-- leads whose streams a fold of one user's Lead Manager at a past position reads.
CREATE TABLE lead_assignments (
    agent_id       UUID   NOT NULL,
    lead_id        UUID   NOT NULL,
    since_position BIGINT NOT NULL,
    PRIMARY KEY (agent_id, lead_id)
);

-- The position of each lead's last event, folded into its row: a lead whose last
-- event is at or before a past position was then what its row is now.
ALTER TABLE leads_view ADD COLUMN position BIGINT NOT NULL DEFAULT 0;

-- Names sort by their characters' codes, as on SQLite, whatever the database's
-- collation: a Lead Manager and a template list sorted by name read the same on
-- both backends, and the same as a fold of the log in memory.
ALTER TABLE leads_view ALTER COLUMN name_key TYPE TEXT COLLATE "C";
ALTER TABLE templates_view ALTER COLUMN name TYPE TEXT COLLATE "C";
