//! The lead manager projection: for each user, the leads assigned to them with their
//! current fields, stage, tags, last contact and next open task; each lead's notes,
//! tasks and communications; counts per stage. Filters by stage, tag and text, four
//! sort orders, cursor pagination, each backed by an index.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use crm_events::catalog::values::Stage;
use crm_events::ids::{LeadId, SiteId, UserId};
use crm_events::{on_pool, Database, DomainEvent, StoreError, Tx};
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::projection::{Decoded, Projection};
use crate::query::{
    contains_pattern, decode_cursor, paginate, text_at, time_at, uuid_at, Bind, Page, QueryError,
    Sql,
};
use crate::sql::{execute, fetch_optional};

/// See the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct LeadManager;

/// The sort key of a lead without open tasks: after every real due date.
fn no_task_due() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 12, 31, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl Projection for LeadManager {
    fn name(&self) -> &'static str {
        "lead_manager"
    }

    fn version(&self) -> i64 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "lead_tags",
            "lead_notes",
            "lead_tasks",
            "lead_communications",
            "leads_view",
        ]
    }

    fn reads(&self, event: &DomainEvent) -> bool {
        event.stream_type() == crm_events::StreamType::Lead
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut Tx<'_>,
        decoded: &'a Decoded,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(apply(tx, decoded))
    }
}

async fn apply(tx: &mut Tx<'_>, decoded: &Decoded) -> Result<(), StoreError> {
    let e = &decoded.recorded;
    let id = e.stream.id;
    let at = e.recorded_at;
    match &decoded.event {
        DomainEvent::LeadCreated(c) => {
            execute!(
                tx,
                "INSERT INTO leads_view (id, site_id, assigned_agent_id, name, name_key, email, phone, \
                 source, stage, tags, archived, last_contacted_at, next_task_due_at, due_key, \
                 created_at, updated_at, version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, NULL, NULL, $12, $13, $14, $15)",
                id,
                e.site_id.as_uuid(),
                c.assigned_agent_id.map(|a| a.as_uuid()),
                &c.name,
                c.name.to_lowercase(),
                c.email.as_deref(),
                c.phone.as_deref(),
                c.source.as_deref(),
                c.stage.as_str(),
                json!(c.tags).to_string(),
                false,
                no_task_due(),
                at,
                at,
                i64::try_from(e.stream_version).unwrap_or(i64::MAX)
            )?;
            for tag in &c.tags {
                execute!(
                    tx,
                    "INSERT INTO lead_tags (lead_id, tag) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    id,
                    tag
                )?;
            }
            return Ok(());
        }
        DomainEvent::LeadFieldsUpdated(u) => {
            for change in &u.changes {
                let value = change.after.as_str();
                match change.field.as_str() {
                    "name" => {
                        let name = value.unwrap_or_default();
                        execute!(
                            tx,
                            "UPDATE leads_view SET name = $1, name_key = $2 WHERE id = $3",
                            name,
                            name.to_lowercase(),
                            id
                        )?;
                    }
                    "email" => execute!(
                        tx,
                        "UPDATE leads_view SET email = $1 WHERE id = $2",
                        value,
                        id
                    )
                    .map(drop)?,
                    "phone" => execute!(
                        tx,
                        "UPDATE leads_view SET phone = $1 WHERE id = $2",
                        value,
                        id
                    )
                    .map(drop)?,
                    "source" => execute!(
                        tx,
                        "UPDATE leads_view SET source = $1 WHERE id = $2",
                        value,
                        id
                    )
                    .map(drop)?,
                    _ => {}
                }
            }
        }
        DomainEvent::LeadStageChanged(s) => {
            execute!(
                tx,
                "UPDATE leads_view SET stage = $1 WHERE id = $2",
                s.to.as_str(),
                id
            )?;
        }
        DomainEvent::LeadReassigned(r) => {
            execute!(
                tx,
                "UPDATE leads_view SET assigned_agent_id = $1 WHERE id = $2",
                r.to.as_uuid(),
                id
            )?;
        }
        DomainEvent::LeadTagAdded(t) => {
            execute!(
                tx,
                "INSERT INTO lead_tags (lead_id, tag) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                id,
                &t.tag
            )?;
            update_tags(tx, id, |tags| {
                if !tags.contains(&t.tag) {
                    tags.push(t.tag.clone());
                }
            })
            .await?;
        }
        DomainEvent::LeadTagRemoved(t) => {
            execute!(
                tx,
                "DELETE FROM lead_tags WHERE lead_id = $1 AND tag = $2",
                id,
                &t.tag
            )?;
            update_tags(tx, id, |tags| tags.retain(|x| *x != t.tag)).await?;
        }
        DomainEvent::LeadNoteAdded(n) => {
            execute!(
                tx,
                "INSERT INTO lead_notes (id, lead_id, body, author_id, created_at) VALUES ($1, $2, $3, $4, $5)",
                n.note_id.as_uuid(),
                id,
                &n.body,
                e.subject_id.as_uuid(),
                at
            )?;
        }
        DomainEvent::LeadTaskCreated(t) => {
            execute!(
                tx,
                "INSERT INTO lead_tasks (id, lead_id, title, due_at, completed_at, created_at) \
                 VALUES ($1, $2, $3, $4, NULL, $5)",
                t.task_id.as_uuid(),
                id,
                &t.title,
                t.due_at,
                at
            )?;
            next_task_due(tx, id).await?;
        }
        DomainEvent::LeadTaskCompleted(t) => {
            execute!(
                tx,
                "UPDATE lead_tasks SET completed_at = $1 WHERE id = $2",
                at,
                t.task_id.as_uuid()
            )?;
            next_task_due(tx, id).await?;
        }
        DomainEvent::LeadCommunicationLogged(c) => {
            execute!(
                tx,
                "INSERT INTO lead_communications (id, lead_id, channel, direction, summary, author_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                c.communication_id.as_uuid(),
                id,
                c.channel.as_str(),
                c.direction.as_str(),
                &c.summary,
                e.subject_id.as_uuid(),
                at
            )?;
            execute!(
                tx,
                "UPDATE leads_view SET last_contacted_at = $1 WHERE id = $2",
                at,
                id
            )?;
        }
        DomainEvent::LeadArchived(_) => {
            execute!(
                tx,
                "UPDATE leads_view SET archived = $1 WHERE id = $2",
                true,
                id
            )?;
        }
        _ => {}
    }
    execute!(
        tx,
        "UPDATE leads_view SET updated_at = $1, version = $2 WHERE id = $3",
        at,
        i64::try_from(e.stream_version).unwrap_or(i64::MAX),
        id
    )?;
    Ok(())
}

async fn update_tags(
    tx: &mut Tx<'_>,
    id: Uuid,
    change: impl FnOnce(&mut Vec<String>),
) -> Result<(), StoreError> {
    let row = fetch_optional!(
        tx,
        (String,),
        "SELECT tags FROM leads_view WHERE id = $1",
        id
    )?;
    let mut tags: Vec<String> = row
        .and_then(|(t,)| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    change(&mut tags);
    execute!(
        tx,
        "UPDATE leads_view SET tags = $1 WHERE id = $2",
        json!(tags).to_string(),
        id
    )?;
    Ok(())
}

async fn next_task_due(tx: &mut Tx<'_>, id: Uuid) -> Result<(), StoreError> {
    let row = fetch_optional!(
        tx,
        (DateTime<Utc>,),
        "SELECT due_at FROM lead_tasks WHERE lead_id = $1 AND completed_at IS NULL ORDER BY due_at LIMIT 1",
        id
    )?;
    let due = row.map(|(d,)| d);
    execute!(
        tx,
        "UPDATE leads_view SET next_task_due_at = $1, due_key = $2 WHERE id = $3",
        due,
        due.unwrap_or_else(no_task_due),
        id
    )?;
    Ok(())
}

/// A lead as the Lead Manager shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lead {
    pub id: Uuid,
    #[serde(skip)]
    pub site_id: Uuid,
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub source: Option<String>,
    pub stage: String,
    pub tags: Vec<String>,
    pub assigned_agent_id: Option<Uuid>,
    pub last_contacted_at: Option<DateTime<Utc>>,
    pub next_task_due_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
    #[serde(skip)]
    pub archived: bool,
    #[serde(skip)]
    name_key: String,
    #[serde(skip)]
    due_key: DateTime<Utc>,
}

#[derive(Debug, sqlx::FromRow)]
struct LeadRow {
    id: Uuid,
    site_id: Uuid,
    assigned_agent_id: Option<Uuid>,
    name: String,
    name_key: String,
    email: Option<String>,
    phone: Option<String>,
    source: Option<String>,
    stage: String,
    tags: String,
    archived: bool,
    last_contacted_at: Option<DateTime<Utc>>,
    next_task_due_at: Option<DateTime<Utc>>,
    due_key: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    version: i64,
}

impl From<LeadRow> for Lead {
    fn from(r: LeadRow) -> Self {
        Lead {
            id: r.id,
            site_id: r.site_id,
            name: r.name,
            email: r.email,
            phone: r.phone,
            source: r.source,
            stage: r.stage,
            tags: serde_json::from_str(&r.tags).unwrap_or_default(),
            assigned_agent_id: r.assigned_agent_id,
            last_contacted_at: r.last_contacted_at,
            next_task_due_at: r.next_task_due_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
            version: r.version,
            archived: r.archived,
            name_key: r.name_key,
            due_key: r.due_key,
        }
    }
}

const LEAD_COLUMNS: &str = "SELECT id, site_id, assigned_agent_id, name, name_key, email, phone, source, stage, \
     tags, archived, last_contacted_at, next_task_due_at, due_key, created_at, updated_at, version FROM leads_view ";

/// Whose leads: one user's (the Lead Manager) or the whole site's (`scope=site`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    AssignedTo(UserId),
    Site(SiteId),
}

/// The Lead Manager's sort orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LeadSort {
    UpdatedAt,
    #[default]
    UpdatedAtDesc,
    Name,
    NextTaskDueAt,
}

impl LeadSort {
    /// The sort named as the API names it (`updated_at`, `-updated_at`, `name`,
    /// `next_task_due_at`).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "updated_at" => Some(Self::UpdatedAt),
            "-updated_at" => Some(Self::UpdatedAtDesc),
            "name" => Some(Self::Name),
            "next_task_due_at" => Some(Self::NextTaskDueAt),
            _ => None,
        }
    }

    fn column(self) -> &'static str {
        match self {
            Self::UpdatedAt | Self::UpdatedAtDesc => "updated_at",
            Self::Name => "name_key",
            Self::NextTaskDueAt => "due_key",
        }
    }
}

/// What to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadFilter {
    pub owner: Owner,
    pub stage: Option<Stage>,
    pub tag: Option<String>,
    /// Text found in the name, email or phone (case-insensitive).
    pub q: Option<String>,
}

impl LeadFilter {
    #[must_use]
    pub fn of(owner: Owner) -> Self {
        Self {
            owner,
            stage: None,
            tag: None,
            q: None,
        }
    }

    /// The `WHERE` clause; `with_stage` false for the counts per stage.
    fn push_where(&self, sql: &mut Sql, with_stage: bool) {
        match self.owner {
            Owner::AssignedTo(user) => sql
                .push("WHERE assigned_agent_id = ")
                .bind(Bind::Uuid(user.as_uuid())),
            Owner::Site(site) => sql
                .push("WHERE site_id = ")
                .bind(Bind::Uuid(site.as_uuid())),
        };
        sql.push(" AND archived = ").bind(Bind::Bool(false));
        if let (Some(stage), true) = (self.stage, with_stage) {
            sql.push(" AND stage = ")
                .bind(Bind::Text(stage.as_str().to_owned()));
        }
        if let Some(tag) = &self.tag {
            sql.push(" AND EXISTS (SELECT 1 FROM lead_tags t WHERE t.lead_id = leads_view.id AND t.tag = ")
                .bind(Bind::Text(tag.clone()))
                .push(")");
        }
        if let Some(q) = self.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
            let pattern = contains_pattern(q);
            sql.push(" AND (name_key LIKE ")
                .bind(Bind::Text(pattern.clone()))
                .push(" ESCAPE '\\' OR lower(coalesce(email, '')) LIKE ")
                .bind(Bind::Text(pattern.clone()))
                .push(" ESCAPE '\\' OR coalesce(phone, '') LIKE ")
                .bind(Bind::Text(pattern))
                .push(" ESCAPE '\\')");
        }
    }
}

/// The list query for one page (exposed for `EXPLAIN` in tests).
///
/// # Errors
/// [`QueryError::BadCursor`].
pub fn list_query(
    filter: &LeadFilter,
    sort: LeadSort,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Sql, QueryError> {
    let mut sql = Sql::new(LEAD_COLUMNS);
    filter.push_where(&mut sql, true);
    let column = sort.column();
    let descending = sort == LeadSort::UpdatedAtDesc;
    if let Some(cursor) = cursor {
        let key = match sort {
            LeadSort::Name => decode_cursor(cursor, |k| {
                Some((Bind::Text(text_at(k, 0)?), uuid_at(k, 1)?))
            })?,
            _ => decode_cursor(cursor, |k| {
                Some((Bind::Time(time_at(k, 0)?), uuid_at(k, 1)?))
            })?,
        };
        let op = if descending { "<" } else { ">" };
        sql.push(&format!(" AND ({column}, id) {op} ("))
            .bind(key.0)
            .push(", ")
            .bind(Bind::Uuid(key.1))
            .push(")");
    }
    let direction = if descending { "DESC" } else { "ASC" };
    sql.push(&format!(
        " ORDER BY {column} {direction}, id {direction} LIMIT "
    ))
    .bind(Bind::I64(i64::from(limit) + 1));
    Ok(sql)
}

/// One page of leads.
///
/// # Errors
/// [`QueryError::BadCursor`]; store failures.
pub async fn list(
    db: &Database,
    filter: &LeadFilter,
    sort: LeadSort,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page<Lead>, QueryError> {
    let rows: Vec<LeadRow> = list_query(filter, sort, cursor, limit)?
        .fetch_all(db)
        .await?;
    let leads: Vec<Lead> = rows.into_iter().map(Lead::from).collect();
    Ok(paginate(leads, limit, |l| match sort {
        LeadSort::Name => json!([l.name_key, l.id]),
        LeadSort::NextTaskDueAt => json!([l.due_key, l.id]),
        LeadSort::UpdatedAt | LeadSort::UpdatedAtDesc => json!([l.updated_at, l.id]),
    }))
}

/// How many leads of the filter (stage aside) are in each stage; every stage is
/// listed, with 0 where there are none.
///
/// # Errors
/// Store failures.
pub async fn counts_by_stage(
    db: &Database,
    filter: &LeadFilter,
) -> Result<BTreeMap<String, i64>, QueryError> {
    let mut sql = Sql::new("SELECT stage, COUNT(*) FROM leads_view ");
    filter.push_where(&mut sql, false);
    sql.push(" GROUP BY stage");
    let rows: Vec<(String, i64)> = sql.fetch_all(db).await?;
    let mut counts: BTreeMap<String, i64> = Stage::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), 0))
        .collect();
    counts.extend(rows);
    Ok(counts)
}

/// One lead (archived ones included; the caller decides what is visible).
///
/// # Errors
/// Store failures.
pub async fn get(db: &Database, id: LeadId) -> Result<Option<Lead>, QueryError> {
    let row: Option<LeadRow> = on_pool!(db, |pool| sqlx::query_as(&format!(
        "{LEAD_COLUMNS}WHERE id = $1"
    ))
    .bind(id.as_uuid())
    .fetch_optional(pool)
    .await?);
    Ok(row.map(Lead::from))
}

/// A note on a lead.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Note {
    pub id: Uuid,
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub author_id: Uuid,
}

/// A task on a lead.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Task {
    pub id: Uuid,
    pub title: String,
    pub due_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// A logged call, email or text.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Communication {
    pub id: Uuid,
    pub channel: String,
    pub direction: String,
    pub summary: String,
    pub created_at: DateTime<Utc>,
    pub author_id: Uuid,
}

/// A lead's notes, oldest first.
///
/// # Errors
/// Store failures.
pub async fn notes(db: &Database, lead: LeadId) -> Result<Vec<Note>, QueryError> {
    Ok(on_pool!(db, |pool| {
        sqlx::query_as(
        "SELECT id, body, created_at, author_id FROM lead_notes WHERE lead_id = $1 ORDER BY created_at, id"
    )
    .bind(lead.as_uuid())
    .fetch_all(pool)
    .await?
    }))
}

/// A lead's tasks, soonest due first.
///
/// # Errors
/// Store failures.
pub async fn tasks(db: &Database, lead: LeadId) -> Result<Vec<Task>, QueryError> {
    Ok(on_pool!(db, |pool| {
        sqlx::query_as(
        "SELECT id, title, due_at, completed_at FROM lead_tasks WHERE lead_id = $1 ORDER BY due_at, id"
    )
    .bind(lead.as_uuid())
    .fetch_all(pool)
    .await?
    }))
}

/// A lead's communications, oldest first.
///
/// # Errors
/// Store failures.
pub async fn communications(db: &Database, lead: LeadId) -> Result<Vec<Communication>, QueryError> {
    Ok(on_pool!(db, |pool| sqlx::query_as(
        "SELECT id, channel, direction, summary, created_at, author_id FROM lead_communications \
         WHERE lead_id = $1 ORDER BY created_at, id"
    )
    .bind(lead.as_uuid())
    .fetch_all(pool)
    .await?))
}

/// One task.
///
/// # Errors
/// Store failures.
pub async fn task(db: &Database, id: crm_events::ids::TaskId) -> Result<Option<Task>, QueryError> {
    Ok(on_pool!(db, |pool| sqlx::query_as(
        "SELECT id, title, due_at, completed_at FROM lead_tasks WHERE id = $1"
    )
    .bind(id.as_uuid())
    .fetch_optional(pool)
    .await?))
}
