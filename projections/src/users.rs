//! The users projection: each site's users list (role, active) and the site's
//! impersonation settings, which the list needs to say on which rows "Log in as
//! user" is allowed.

use chrono::{DateTime, Utc};
use crm_events::ids::{SiteId, UserId};
use crm_events::{on_pool, Database, DomainEvent, StoreError, Tx};
use serde_json::json;
use uuid::Uuid;

use crate::projection::{Decoded, Projection};
use crate::query::{decode_cursor, paginate, text_at, uuid_at, Bind, Page, QueryError, Sql};
use crate::sql::execute;

/// See the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Users;

/// The projection's name, in the checkpoint table and wherever a read names what
/// it reads.
pub const NAME: &str = "users";

impl Projection for Users {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> i64 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["users_view", "sites_view"]
    }

    fn reads(&self, event: &DomainEvent) -> bool {
        matches!(
            event,
            DomainEvent::SiteCreated(_)
                | DomainEvent::SiteSettingsChanged(_)
                | DomainEvent::UserCreated(_)
                | DomainEvent::UserRoleChanged(_)
                | DomainEvent::UserEmailChanged(_)
                | DomainEvent::UserDeactivated(_)
                | DomainEvent::UserReactivated(_)
                | DomainEvent::UserPasswordChanged(_)
                | DomainEvent::UserLoggedIn(_)
                | DomainEvent::UserLoggedOut(_)
                | DomainEvent::NotificationsRead(_)
        )
    }

    crate::projection::event_by_event!(apply);
}

async fn apply(tx: &mut Tx<'_>, decoded: &Decoded) -> Result<(), StoreError> {
    let e = &decoded.recorded;
    let id = e.stream.id;
    let version = i64::try_from(e.stream_version).unwrap_or(i64::MAX);
    match &decoded.event {
        DomainEvent::SiteCreated(site) => {
            execute!(
                tx,
                "INSERT INTO sites_view (id, name, impersonation_enabled, impersonation_max_minutes, \
                 impersonation_reason_required, notify_subject_on_impersonation, version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                id,
                &site.name,
                true,
                60_i64,
                true,
                false,
                version
            )?;
        }
        DomainEvent::SiteSettingsChanged(changed) => {
            for change in &changed.changes {
                let column = match change.field.as_str() {
                    "impersonation_enabled" => "impersonation_enabled",
                    "impersonation_max_minutes" => "impersonation_max_minutes",
                    "impersonation_reason_required" => "impersonation_reason_required",
                    "notify_subject_on_impersonation" => "notify_subject_on_impersonation",
                    _ => continue,
                };
                let sql = format!("UPDATE sites_view SET {column} = $1 WHERE id = $2");
                if let Some(minutes) = change.after.as_i64() {
                    execute!(tx, &sql, minutes, id)?;
                } else {
                    execute!(tx, &sql, change.after.as_bool().unwrap_or(false), id)?;
                }
            }
            execute!(
                tx,
                "UPDATE sites_view SET version = $1 WHERE id = $2",
                version,
                id
            )?;
        }
        DomainEvent::UserCreated(user) => {
            execute!(
                tx,
                "INSERT INTO users_view (id, site_id, name, email, role, active, created_at, version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                id,
                e.site_id.as_uuid(),
                &user.name,
                &user.email,
                user.role.as_str(),
                true,
                e.recorded_at,
                version
            )?;
        }
        DomainEvent::UserRoleChanged(changed) => {
            execute!(
                tx,
                "UPDATE users_view SET role = $1, version = $2 WHERE id = $3",
                changed.to.as_str(),
                version,
                id
            )?;
        }
        DomainEvent::UserEmailChanged(changed) => {
            execute!(
                tx,
                "UPDATE users_view SET email = $1, version = $2 WHERE id = $3",
                &changed.to,
                version,
                id
            )?;
        }
        DomainEvent::UserDeactivated(_) | DomainEvent::UserReactivated(_) => {
            let active = matches!(decoded.event, DomainEvent::UserReactivated(_));
            execute!(
                tx,
                "UPDATE users_view SET active = $1, version = $2 WHERE id = $3",
                active,
                version,
                id
            )?;
        }
        _ => {
            // Other events of the user's stream only move its version (the ETag).
            execute!(
                tx,
                "UPDATE users_view SET version = $1 WHERE id = $2",
                version,
                id
            )?;
        }
    }
    Ok(())
}

/// One row of the users list.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct UserRow {
    pub id: Uuid,
    pub site_id: Uuid,
    pub name: String,
    pub email: String,
    pub role: String,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub version: i64,
}

/// A site's settings as the users list and the site settings page show them.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct SiteRow {
    pub id: Uuid,
    pub name: String,
    pub impersonation_enabled: bool,
    pub impersonation_max_minutes: i64,
    pub impersonation_reason_required: bool,
    pub notify_subject_on_impersonation: bool,
    pub version: i64,
}

const USER_COLUMNS: &str =
    "SELECT id, site_id, name, email, role, active, created_at, version FROM users_view ";

/// A page of the site's users, by name.
///
/// # Errors
/// [`QueryError::BadCursor`]; store failures.
pub async fn list(
    db: &Database,
    site: SiteId,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page<UserRow>, QueryError> {
    let mut sql = Sql::new(USER_COLUMNS);
    sql.push("WHERE site_id = ")
        .bind(Bind::Uuid(site.as_uuid()));
    if let Some(cursor) = cursor {
        let (name, id) = decode_cursor(cursor, |key| Some((text_at(key, 0)?, uuid_at(key, 1)?)))?;
        sql.push(" AND (name, id) > (")
            .bind(Bind::Text(name))
            .push(", ")
            .bind(Bind::Uuid(id))
            .push(")");
    }
    sql.push(" ORDER BY name, id LIMIT ")
        .bind(Bind::I64(i64::from(limit) + 1));
    let rows: Vec<UserRow> = sql.fetch_all(db).await?;
    Ok(paginate(rows, limit, |u| json!([u.name, u.id])))
}

/// One user of the site.
///
/// # Errors
/// Store failures.
pub async fn get(db: &Database, site: SiteId, id: UserId) -> Result<Option<UserRow>, StoreError> {
    let row: Option<UserRow> = on_pool!(db, |pool| sqlx::query_as(&format!(
        "{USER_COLUMNS}WHERE id = $1 AND site_id = $2"
    ))
    .bind(id.as_uuid())
    .bind(site.as_uuid())
    .fetch_optional(pool)
    .await?);
    Ok(row)
}

/// The site's settings.
///
/// # Errors
/// Store failures.
pub async fn site(db: &Database, site: SiteId) -> Result<Option<SiteRow>, StoreError> {
    let row: Option<SiteRow> = on_pool!(db, |pool| {
        sqlx::query_as(
        "SELECT id, name, impersonation_enabled, impersonation_max_minutes, impersonation_reason_required, \
         notify_subject_on_impersonation, version FROM sites_view WHERE id = $1"
    )
    .bind(site.as_uuid())
    .fetch_optional(pool)
    .await?
    });
    Ok(row)
}
