//! The audit export: a site's changes, a page at a time, as CSV (through the csv
//! crate) or NDJSON (one object per line). Memory stays flat however long the trail.
//! Shared by `GET /api/audit/export`, `crm audit export` and the benchmark.

use crm_events::ids::SiteId;
use crm_events::Database;
use crm_projections::audit_trail::{self, Change, ChangeFilter};
use crm_projections::QueryError;
use futures_util::Stream;

/// The export's formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Ndjson,
}

impl Format {
    /// `csv` or `ndjson`.
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "csv" => Some(Self::Csv),
            "ndjson" => Some(Self::Ndjson),
            _ => None,
        }
    }
}

/// The export as a stream of chunks, one per page of 1,000 changes (the CSV header
/// row first).
pub fn chunks(
    db: Database,
    site: SiteId,
    filter: ChangeFilter,
    format: Format,
) -> impl Stream<Item = Result<Vec<u8>, QueryError>> + Send + 'static {
    async_stream::try_stream! {
        let mut cursor: Option<String> = None;
        let mut first = true;
        loop {
            let page = audit_trail::changes(&db, site, &filter, cursor.as_deref(), 1_000).await?;
            yield match format {
                Format::Csv => csv_rows(&page.items, first),
                Format::Ndjson => ndjson_lines(&page.items),
            };
            first = false;
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
}

/// One page as CSV rows (with the header row first): ids with the names beside
/// them, and the session's reason.
fn csv_rows(changes: &[Change], header: bool) -> Vec<u8> {
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
            "entity_label",
            "field",
            "before",
            "after",
            "actor_id",
            "actor_name",
            "subject_id",
            "subject_name",
            "impersonation_id",
            "impersonation_reason",
        ]);
    }
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    for c in changes {
        let _ = writer.write_record([
            c.position.to_string(),
            c.at.to_rfc3339(),
            c.event_type.clone(),
            c.entity_type.clone(),
            c.entity_id.to_string(),
            text(&c.entity_label),
            c.field.clone(),
            cell(&c.before),
            cell(&c.after),
            c.actor_id.to_string(),
            text(&c.actor_name),
            c.subject_id.to_string(),
            text(&c.subject_name),
            c.impersonation_id
                .map(|i| i.to_string())
                .unwrap_or_default(),
            text(&c.impersonation_reason),
        ]);
    }
    writer.into_inner().unwrap_or_default()
}

/// A value as a spreadsheet shows it: text as it is (the CSV writer quotes it
/// where needed), nothing for none, anything else (lists, objects) as JSON.
fn cell(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// One page as NDJSON lines.
fn ndjson_lines(changes: &[Change]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in changes {
        if serde_json::to_writer(&mut out, c).is_ok() {
            out.push(b'\n');
        }
    }
    out
}
