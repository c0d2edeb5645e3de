-- Every user a lead was ever assigned to, from the position it first was: the
-- leads whose streams a fold of one user's Lead Manager at a past position reads.
CREATE TABLE lead_assignments (
    agent_id      BLOB    NOT NULL,
    lead_id       BLOB    NOT NULL,
    since_position INTEGER NOT NULL,
    PRIMARY KEY (agent_id, lead_id)
) WITHOUT ROWID;

-- The position of each lead's last event, folded into its row: a lead whose last
-- event is at or before a past position was then what its row is now.
ALTER TABLE leads_view ADD COLUMN position INTEGER NOT NULL DEFAULT 0;
