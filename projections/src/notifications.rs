//! The notifications projection: per user, e.g. "Ann Admin logged in as you: Fix the
//! template" when the site notifies agents of impersonation. It keeps the names and
//! site switches it needs in tables of its own, so it folds (and rebuilds) alone.

use chrono::{DateTime, Utc};
use crm_events::ids::UserId;
use crm_events::{Database, DomainEvent, StoreError, Tx};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::projection::{Decoded, Projection};
use crate::query::{decode_cursor, i64_at, paginate, Bind, Page, QueryError, Sql};
use crate::sql::{execute, fetch_optional};

/// See the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Notifications;

/// The kind of an impersonation notice.
pub const LOGGED_IN_AS_YOU: &str = "impersonation_started";

/// The projection's name, in the checkpoint table and wherever a read names what
/// it reads.
pub const NAME: &str = "notifications";

impl Projection for Notifications {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> i64 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["notifications", "notification_people", "notification_sites"]
    }

    fn reads(&self, event: &DomainEvent) -> bool {
        matches!(
            event,
            DomainEvent::SiteCreated(_)
                | DomainEvent::SiteSettingsChanged(_)
                | DomainEvent::UserCreated(_)
                | DomainEvent::ImpersonationStarted(_)
                | DomainEvent::NotificationsRead(_)
        )
    }

    crate::projection::event_by_event!(apply);
}

async fn apply(tx: &mut Tx<'_>, decoded: &Decoded) -> Result<(), StoreError> {
    let e = &decoded.recorded;
    match &decoded.event {
        DomainEvent::SiteCreated(_) => {
            execute!(
                tx,
                "INSERT INTO notification_sites (site_id, notify_subject) VALUES ($1, $2)",
                e.stream.id,
                false
            )?;
        }
        DomainEvent::SiteSettingsChanged(changed) => {
            for change in changed
                .changes
                .iter()
                .filter(|c| c.field == "notify_subject_on_impersonation")
            {
                execute!(
                    tx,
                    "UPDATE notification_sites SET notify_subject = $1 WHERE site_id = $2",
                    change.after.as_bool().unwrap_or(false),
                    e.stream.id
                )?;
            }
        }
        DomainEvent::UserCreated(user) => {
            execute!(
                tx,
                "INSERT INTO notification_people (user_id, name) VALUES ($1, $2)",
                e.stream.id,
                &user.name
            )?;
        }
        DomainEvent::ImpersonationStarted(started) => {
            let notify = fetch_optional!(
                tx,
                (bool,),
                "SELECT notify_subject FROM notification_sites WHERE site_id = $1",
                e.site_id.as_uuid()
            )?;
            if notify.is_some_and(|(n,)| n) {
                let admin = fetch_optional!(
                    tx,
                    (String,),
                    "SELECT name FROM notification_people WHERE user_id = $1",
                    started.admin_id.as_uuid()
                )?
                .map_or_else(|| "An administrator".to_owned(), |(name,)| name);
                let text = match &started.reason {
                    Some(reason) => format!("{admin} logged in as you: {reason}"),
                    None => format!("{admin} logged in as you"),
                };
                execute!(
                    tx,
                    "INSERT INTO notifications (id, user_id, site_id, kind, text, position, created_at, read_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)",
                    e.event_id.as_uuid(),
                    started.subject_id.as_uuid(),
                    e.site_id.as_uuid(),
                    LOGGED_IN_AS_YOU,
                    text,
                    e.position.0,
                    e.recorded_at
                )?;
            }
        }
        DomainEvent::NotificationsRead(read) => {
            execute!(
                tx,
                "UPDATE notifications SET read_at = $1 \
                 WHERE user_id = $2 AND position <= $3 AND read_at IS NULL",
                e.recorded_at,
                e.stream.id,
                read.up_to_position
            )?;
        }
        _ => {}
    }
    Ok(())
}

/// One notification.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Notification {
    pub id: Uuid,
    pub kind: String,
    pub text: String,
    pub created_at: DateTime<Utc>,
    pub read_at: Option<DateTime<Utc>>,
    /// Where it was recorded: what `POST /api/me/notifications/read` takes.
    pub position: i64,
}

/// The position of a user's latest unread notification at or before `up_to` (any,
/// when `None`), if there is one.
///
/// # Errors
/// Store failures.
pub async fn latest_unread(
    db: &Database,
    user: UserId,
    up_to: Option<i64>,
) -> Result<Option<i64>, QueryError> {
    let mut sql = Sql::new("SELECT MAX(position) FROM notifications WHERE user_id = ");
    sql.bind(Bind::Uuid(user.as_uuid()))
        .push(" AND read_at IS NULL AND position <= ")
        .bind(Bind::I64(up_to.unwrap_or(i64::MAX)));
    let rows: Vec<(Option<i64>,)> = sql.fetch_all(db).await?;
    Ok(rows.into_iter().next().and_then(|(p,)| p))
}

/// A page of a user's notifications, newest first.
///
/// # Errors
/// [`QueryError::BadCursor`]; store failures.
pub async fn list(
    db: &Database,
    user: UserId,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page<Notification>, QueryError> {
    let mut sql = Sql::new(
        "SELECT id, kind, text, created_at, read_at, position FROM notifications WHERE user_id = ",
    );
    sql.bind(Bind::Uuid(user.as_uuid()));
    if let Some(cursor) = cursor {
        let before = decode_cursor(cursor, |k| i64_at(k, 0))?;
        sql.push(" AND position < ").bind(Bind::I64(before));
    }
    sql.push(" ORDER BY position DESC LIMIT ")
        .bind(Bind::I64(i64::from(limit) + 1));
    let rows: Vec<Notification> = sql.fetch_all(db).await?;
    Ok(paginate(rows, limit, |n| json!([n.position])))
}
