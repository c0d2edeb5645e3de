//! The audit export's two formats, written a page at a time (CSV through the csv
//! crate; NDJSON one object per line), shared by the HTTP export and `crm audit export`.

use crm_projections::audit_trail::Change;

/// One page as CSV rows (with the header row first).
pub fn csv_rows(changes: &[Change], header: bool) -> Vec<u8> {
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    if header {
        let _ = writer.write_record([
            "position",
            "at",
            "event_type",
            "entity_type",
            "entity_id",
            "field",
            "before",
            "after",
            "actor_id",
            "subject_id",
            "impersonation_id",
        ]);
    }
    for c in changes {
        let _ = writer.write_record([
            c.position.to_string(),
            c.at.to_rfc3339(),
            c.event_type.clone(),
            c.entity_type.clone(),
            c.entity_id.to_string(),
            c.field.clone(),
            c.before.to_string(),
            c.after.to_string(),
            c.actor_id.to_string(),
            c.subject_id.to_string(),
            c.impersonation_id
                .map(|i| i.to_string())
                .unwrap_or_default(),
        ]);
    }
    writer.into_inner().unwrap_or_default()
}

/// One page as NDJSON lines.
pub fn ndjson_lines(changes: &[Change]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in changes {
        if serde_json::to_writer(&mut out, c).is_ok() {
            out.push(b'\n');
        }
    }
    out
}
