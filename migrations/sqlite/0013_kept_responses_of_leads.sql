-- The lead a kept response is about (its path's, or the lead a POST /api/leads
-- created), so that erasing a lead also removes the answers that hold its
-- personal data. NULL for answers about nothing of a lead's, and for those kept
-- before this column existed.
ALTER TABLE http_idempotency ADD COLUMN lead_id BLOB;

CREATE INDEX http_idempotency_by_lead ON http_idempotency (lead_id) WHERE lead_id IS NOT NULL;
