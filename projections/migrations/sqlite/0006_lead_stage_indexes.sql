-- The Lead Manager filtered by stage, in each of its sort orders.
--
-- Why: with a stage filter, an index on (owner, archived, sort key) is read in
-- order and every lead of another stage skipped; for a rare stage that is the
-- owner's whole list. With the stage right after the owner, each filtered page reads
-- only its own rows, in order. These also serve the counts per stage, which the
-- (owner, archived, stage) indexes they replace were for.

DROP INDEX leads_by_agent_stage;
DROP INDEX leads_by_site_stage;

CREATE INDEX leads_by_agent_stage_updated ON leads_view (assigned_agent_id, archived, stage, updated_at, id);
CREATE INDEX leads_by_agent_stage_name ON leads_view (assigned_agent_id, archived, stage, name_key, id);
CREATE INDEX leads_by_agent_stage_due ON leads_view (assigned_agent_id, archived, stage, due_key, id);
CREATE INDEX leads_by_site_stage_updated ON leads_view (site_id, archived, stage, updated_at, id);
CREATE INDEX leads_by_site_stage_name ON leads_view (site_id, archived, stage, name_key, id);
CREATE INDEX leads_by_site_stage_due ON leads_view (site_id, archived, stage, due_key, id);
