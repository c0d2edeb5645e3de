//! The settings projection: each user's settings (communication tools among them)
//! and their email and text templates. Only values a user changed are stored; the
//! application fills in the defaults of keys never set.

use chrono::{DateTime, Utc};
use crm_events::ids::{TemplateId, UserId};
use crm_events::{on_pool, Database, DomainEvent, StoreError, Tx};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::projection::{Decoded, Projection};
use crate::query::QueryError;
use crate::sql::{execute, fetch_optional};

/// See the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct SettingsProjection;

/// The projection's name, in the checkpoint table and wherever a read names what
/// it reads.
pub const NAME: &str = "settings";

impl Projection for SettingsProjection {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> i64 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["templates_view", "settings_view"]
    }

    fn reads(&self, event: &DomainEvent) -> bool {
        event.stream_type() == crm_events::StreamType::Settings
    }

    crate::projection::event_by_event!(apply);
}

async fn apply(tx: &mut Tx<'_>, decoded: &Decoded) -> Result<(), StoreError> {
    let e = &decoded.recorded;
    let user = e.stream.id;
    let version = i64::try_from(e.stream_version).unwrap_or(i64::MAX);
    let at = e.recorded_at;
    let stored = fetch_optional!(
        tx,
        (String,),
        "SELECT settings FROM settings_view WHERE user_id = $1",
        user
    )?;
    let mut values: Map<String, Value> = stored
        .as_ref()
        .and_then(|(s,)| serde_json::from_str(s).ok())
        .unwrap_or_default();
    match &decoded.event {
        DomainEvent::UserSettingsChanged(changed) => {
            for change in &changed.changes {
                values.insert(change.field.clone(), change.after.clone());
            }
        }
        DomainEvent::TemplateCreated(t) => {
            execute!(
                tx,
                "INSERT INTO templates_view (id, user_id, site_id, kind, name, subject, body, version, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                t.template_id.as_uuid(),
                user,
                e.site_id.as_uuid(),
                t.kind.as_str(),
                &t.name,
                t.subject.as_deref(),
                &t.body,
                1_i64,
                at,
                at
            )?;
        }
        DomainEvent::TemplateUpdated(t) => {
            let id = t.template_id.as_uuid();
            for change in &t.changes {
                let column = match change.field.as_str() {
                    "name" => "name",
                    "subject" => "subject",
                    "body" => "body",
                    _ => continue,
                };
                let sql = format!("UPDATE templates_view SET {column} = $1 WHERE id = $2");
                execute!(tx, &sql, change.after.as_str(), id)?;
            }
            execute!(
                tx,
                "UPDATE templates_view SET version = version + 1, updated_at = $1 WHERE id = $2",
                at,
                id
            )?;
        }
        DomainEvent::TemplateDeleted(t) => {
            execute!(
                tx,
                "DELETE FROM templates_view WHERE id = $1",
                t.template_id.as_uuid()
            )?;
        }
        _ => {}
    }
    let values = Value::Object(values).to_string();
    if stored.is_some() {
        execute!(
            tx,
            "UPDATE settings_view SET settings = $1, version = $2 WHERE user_id = $3",
            values,
            version,
            user
        )?;
    } else {
        execute!(
            tx,
            "INSERT INTO settings_view (user_id, site_id, settings, version) VALUES ($1, $2, $3, $4)",
            user,
            e.site_id.as_uuid(),
            values,
            version
        )?;
    }
    Ok(())
}

/// A user's stored settings (only the keys they changed) and the stream version.
///
/// # Errors
/// Store failures.
pub async fn get(db: &Database, user: UserId) -> Result<(Map<String, Value>, i64), QueryError> {
    let row: Option<(String, i64)> = on_pool!(db, |pool| sqlx::query_as(
        "SELECT settings, version FROM settings_view WHERE user_id = $1"
    )
    .bind(user.as_uuid())
    .fetch_optional(pool)
    .await?);
    Ok(row.map_or_else(
        || (Map::new(), 0),
        |(settings, version)| (serde_json::from_str(&settings).unwrap_or_default(), version),
    ))
}

/// An email or text template.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Template {
    pub id: Uuid,
    pub kind: String,
    pub name: String,
    pub subject: Option<String>,
    pub body: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const TEMPLATE_COLUMNS: &str =
    "SELECT id, kind, name, subject, body, version, created_at, updated_at FROM templates_view ";

/// A user's templates, by name.
///
/// # Errors
/// Store failures.
pub async fn templates(db: &Database, user: UserId) -> Result<Vec<Template>, QueryError> {
    Ok(on_pool!(db, |pool| sqlx::query_as(&format!(
        "{TEMPLATE_COLUMNS}WHERE user_id = $1 ORDER BY name, id"
    ))
    .bind(user.as_uuid())
    .fetch_all(pool)
    .await?))
}

/// One template of a user.
///
/// # Errors
/// Store failures.
pub async fn template(
    db: &Database,
    user: UserId,
    id: TemplateId,
) -> Result<Option<Template>, QueryError> {
    Ok(on_pool!(db, |pool| sqlx::query_as(&format!(
        "{TEMPLATE_COLUMNS}WHERE id = $1 AND user_id = $2"
    ))
    .bind(id.as_uuid())
    .bind(user.as_uuid())
    .fetch_optional(pool)
    .await?))
}
