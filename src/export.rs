//! The audit export: a site's changes, a page at a time, as CSV (through the csv
//! crate) or NDJSON (one object per line). Memory stays flat however long the trail.
//! Shared by `GET /api/audit/export`, `crm audit export` and the benchmark.
//!
//! An export up to a position is reproducible (the same filter and `up_to` give
//! the same bytes), so it can come with a signed [`Manifest`]: the filter, the
//! position, the number of rows and the SHA-256 of the bytes, which
//! [`verify_export`] checks offline with the public key.

use chrono::{DateTime, Utc};
use crm_events::ids::SiteId;
use crm_events::Database;
use crm_projections::audit_trail::{self, Change, ChangeFilter};
use crm_projections::query::Order;
use crm_projections::QueryError;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Ndjson => "ndjson",
        }
    }
}

/// What a manifest states about an export, in the order it is signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ManifestBody {
    #[schema(value_type = uuid::Uuid)]
    pub site_id: SiteId,
    /// The filter, as its query parameters.
    #[schema(value_type = Object)]
    pub filter: serde_json::Map<String, serde_json::Value>,
    pub format: String,
    pub up_to_position: i64,
    pub rows: u64,
    /// Of the export's bytes, hex.
    pub sha256: String,
    pub signed_at: DateTime<Utc>,
    pub key_id: String,
}

/// A manifest with its signature (Ed25519 over the compact JSON of the body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Manifest {
    #[serde(flatten)]
    pub body: ManifestBody,
    pub signature: String,
}

impl ManifestBody {
    #[must_use]
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The filter as the query parameters that ask for it (only those set), in a
/// fixed order.
#[must_use]
pub fn filter_params(filter: &ChangeFilter) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::json;
    let mut params = serde_json::Map::new();
    let mut put = |key: &str, value: Option<serde_json::Value>| {
        if let Some(value) = value {
            params.insert(key.to_owned(), value);
        }
    };
    put("actor_id", filter.actor_id.map(|v| json!(v)));
    put("subject_id", filter.subject_id.map(|v| json!(v)));
    put("entity_type", filter.entity_type.as_ref().map(|v| json!(v)));
    put("entity_id", filter.entity_id.map(|v| json!(v)));
    put("impersonated", filter.impersonated.map(|v| json!(v)));
    put(
        "impersonation_id",
        filter.impersonation_id.map(|v| json!(v)),
    );
    put(
        "kind",
        filter
            .views
            .map(|v| json!(if v { "view" } else { "change" })),
    );
    put("from", filter.from.map(|v| json!(v)));
    put("to", filter.to.map(|v| json!(v)));
    put(
        "order",
        Some(json!(match filter.order {
            Order::NewestFirst => "desc",
            Order::OldestFirst => "asc",
        })),
    );
    params
}

/// The rows and SHA-256 of the export of `filter` (which must have its `up_to`),
/// read as [`chunks`] would send it.
///
/// # Errors
/// Store failures.
pub async fn measure(
    db: Database,
    site: SiteId,
    filter: ChangeFilter,
    format: Format,
) -> Result<(u64, String), QueryError> {
    use futures_util::StreamExt;
    let mut hasher = Sha256::new();
    let mut rows = 0u64;
    let mut pages = std::pin::pin!(pages(db, site, filter, format));
    while let Some(page) = pages.next().await {
        let (bytes, count) = page?;
        hasher.update(&bytes);
        rows += count;
    }
    Ok((rows, hex::encode(hasher.finalize())))
}

/// The rows of an export's bytes: CSV records after the header, or NDJSON lines.
///
/// # Errors
/// A description of what does not parse.
pub fn count_rows(bytes: &[u8], format: Format) -> Result<u64, String> {
    match format {
        Format::Csv => {
            let mut reader = csv::Reader::from_reader(bytes);
            let mut rows = 0u64;
            for record in reader.records() {
                record.map_err(|e| format!("not CSV: {e}"))?;
                rows += 1;
            }
            Ok(rows)
        }
        Format::Ndjson => Ok(bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count() as u64),
    }
}

/// Checks an export's bytes against its manifest and the public key: answers a
/// summary, or what is wrong.
///
/// # Errors
/// What does not match, in words.
pub fn verify_export(
    bytes: &[u8],
    manifest: &Manifest,
    key: &crm_events::digest::PublicKey,
) -> Result<String, String> {
    let body = &manifest.body;
    if body.key_id != key.id() {
        return Err(format!(
            "the manifest is signed by another key ({}, not {})",
            body.key_id,
            key.id()
        ));
    }
    if !key.verifies(&body.canonical(), &manifest.signature) {
        return Err("the manifest's signature does not hold: the manifest was altered".into());
    }
    let sha256 = hex::encode(Sha256::digest(bytes));
    if sha256 != body.sha256 {
        return Err(format!(
            "the file's SHA-256 is {sha256}, the manifest signed {}: the file was altered",
            body.sha256
        ));
    }
    let format =
        Format::parse(&body.format).ok_or_else(|| format!("unknown format {}", body.format))?;
    let rows = count_rows(bytes, format)?;
    if rows != body.rows {
        return Err(format!(
            "the file has {rows} rows, the manifest signed {}",
            body.rows
        ));
    }
    Ok(format!(
        "ok: {} rows of site {} up to position {}, {}, signed by key {} at {}",
        body.rows,
        body.site_id,
        body.up_to_position,
        body.format,
        body.key_id,
        body.signed_at.to_rfc3339()
    ))
}

/// The export as a stream of chunks, one per page of 1,000 changes (the CSV header
/// row first).
pub fn chunks(
    db: Database,
    site: SiteId,
    filter: ChangeFilter,
    format: Format,
) -> impl Stream<Item = Result<Vec<u8>, QueryError>> + Send + 'static {
    use futures_util::StreamExt;
    pages(db, site, filter, format).map(|page| page.map(|(bytes, _)| bytes))
}

/// The export's pages, each with its number of rows.
fn pages(
    db: Database,
    site: SiteId,
    filter: ChangeFilter,
    format: Format,
) -> impl Stream<Item = Result<(Vec<u8>, u64), QueryError>> + Send + 'static {
    async_stream::try_stream! {
        let mut cursor: Option<String> = None;
        let mut first = true;
        loop {
            let page = audit_trail::changes(&db, site, &filter, cursor.as_deref(), 1_000).await?;
            let rows = page.items.len() as u64;
            yield (match format {
                Format::Csv => csv_rows(&page.items, first),
                Format::Ndjson => ndjson_lines(&page.items),
            }, rows);
            first = false;
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
}

/// One page as CSV rows (with the header row first): ids with the names beside
/// them, the session's reason, and whether the row is a change or a view (last,
/// so that the columns before it stay where they were).
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
            "kind",
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
            c.kind.to_owned(),
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
