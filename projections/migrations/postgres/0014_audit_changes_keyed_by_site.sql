-- The audit trail is read one site at a time, newest first, by (site_id, position,
-- seq). With the primary key on (position, seq) alone, PostgreSQL's planner read a
-- site's first page by walking that key backwards and passing over every newer
-- change of the other sites: 11 ms for a site that had been quiet while 38,000
-- changes were made elsewhere, against under 1 ms through the site's index. The key
-- now begins with the site, so no index can serve a site's page without it, and the
-- separate index on the same columns goes (one index fewer to write).
ALTER TABLE audit_changes DROP CONSTRAINT audit_changes_pkey;
ALTER TABLE audit_changes ADD PRIMARY KEY (site_id, position, seq);
DROP INDEX IF EXISTS audit_changes_by_site;
-- A rebuild interrupted before today may have set the index aside to create it again.
DELETE FROM projection_deferred_indexes WHERE name = 'audit_changes_by_site';
