//! The audit trail: every "Log in as user" session (admin, agent, reason, start, end,
//! end reason, number of changes) and every change, field by field (when, which
//! event, which entity, field, before, after, actor, subject, impersonation). Admins
//! review what was changed while impersonating; compliance filters and exports all
//! changes; an agent reads who logged in as them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use crm_events::ids::{ImpersonationId, SiteId, UserId};
use crm_events::vault::{ERASED, PERSONAL_LEAD_FIELDS};
use crm_events::{on_pool, Database, DomainEvent, FieldChange, Rows, StoreError, Tx};
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::projection::{Decoded, Projection};
use crate::query::{decode_cursor, i64_at, paginate, Bind, Order, Page, QueryError, Sql};
use crate::sql::{execute, fetch_all};

/// See the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditTrail;

/// The projection's name, in the checkpoint table and wherever a read names what
/// it reads.
pub const NAME: &str = "audit_trail";

/// The field of the row that records a view (`LeadViewed`): a lead opened while
/// logged in as its agent, nothing changed.
pub const VIEWED: &str = "viewed";

impl Projection for AuditTrail {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> i64 {
        2
    }

    fn tables(&self) -> &'static [&'static str] {
        &["audit_changes", "audit_sessions", "audit_labels"]
    }

    fn reads(&self, event: &DomainEvent) -> bool {
        !matches!(
            event,
            DomainEvent::UserLoggedIn(_)
                | DomainEvent::UserLoggedOut(_)
                | DomainEvent::NotificationsRead(_)
        )
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut Tx<'_>,
        events: &'a [&'a Decoded],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(apply(tx, events))
    }
}

/// A session that started in the batch: written whole at its end.
struct NewSession {
    id: Uuid,
    site_id: Uuid,
    admin_id: Uuid,
    subject_id: Uuid,
    reason: Option<String>,
    started_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    mode: &'static str,
    ended: Option<(DateTime<Utc>, String)>,
    change_count: i64,
    position: i64,
}

/// What the batch did to a session that started before it.
#[derive(Default)]
struct SessionUpdate {
    ended: Option<(DateTime<Utc>, String)>,
    more_changes: i64,
}

/// Folds a batch: every change in multi-row inserts, sessions started in the batch
/// written once with their final state, older sessions updated once each.
async fn apply(tx: &mut Tx<'_>, events: &[&Decoded]) -> Result<(), StoreError> {
    let mut changes = Rows::new(
        "INSERT INTO audit_changes (position, seq, site_id, at, event_type, entity_type, \
         entity_id, field, before, after, actor_id, subject_id, impersonation_id)",
        13,
        "",
    );
    // Leads erased in this batch: their earlier changes in it are written as they
    // read once erased, and those already stored are rewritten below.
    let erased: BTreeMap<Uuid, Uuid> = events
        .iter()
        .filter(|d| matches!(d.event, DomainEvent::LeadErased(_)))
        .map(|d| (d.recorded.stream.id, d.recorded.site_id.as_uuid()))
        .collect();
    let mut started: Vec<NewSession> = Vec::new();
    let mut updated: BTreeMap<Uuid, SessionUpdate> = BTreeMap::new();
    let mut named = Rows::new(
        "INSERT INTO audit_labels (labelled_id, position, label)",
        3,
        "",
    );
    for decoded in events {
        let e = &decoded.recorded;
        if let Some((id, label)) = label_of(&decoded.event, e.stream.id) {
            let label = if erased.contains_key(&id) {
                ERASED.to_owned()
            } else {
                label
            };
            named.push([id.into(), e.position.0.into(), label.into()]);
        }
        match &decoded.event {
            DomainEvent::ImpersonationStarted(s) => started.push(NewSession {
                id: e.stream.id,
                site_id: e.site_id.as_uuid(),
                admin_id: s.admin_id.as_uuid(),
                subject_id: s.subject_id.as_uuid(),
                reason: s.reason.clone(),
                started_at: e.recorded_at,
                expires_at: s.expires_at,
                mode: s.mode.as_str(),
                ended: None,
                change_count: 0,
                position: e.position.0,
            }),
            DomainEvent::ImpersonationEnded(ended) => {
                let end = Some((ended.ended_at, ended.end_reason.as_str().to_owned()));
                match started.iter_mut().find(|s| s.id == e.stream.id) {
                    Some(session) => session.ended = end,
                    None => updated.entry(e.stream.id).or_default().ended = end,
                }
            }
            event => {
                let Some((entity_type, entity_id, fields)) = changes_of(event, e.stream.id) else {
                    continue;
                };
                for (seq, change) in fields.iter().enumerate() {
                    let erasing = entity_type == "lead" && erased.contains_key(&entity_id);
                    let (before, after) = if erasing {
                        (
                            erased_value(&change.field, &change.before),
                            erased_value(&change.field, &change.after),
                        )
                    } else {
                        (change.before.clone(), change.after.clone())
                    };
                    changes.push([
                        e.position.0.into(),
                        i64::try_from(seq).unwrap_or(i64::MAX).into(),
                        e.site_id.as_uuid().into(),
                        e.recorded_at.into(),
                        e.event_type.as_str().into(),
                        entity_type.into(),
                        entity_id.into(),
                        change.field.as_str().into(),
                        before.to_string().into(),
                        after.to_string().into(),
                        e.actor_id.as_uuid().into(),
                        e.subject_id.as_uuid().into(),
                        e.impersonation_id.map(|i| i.as_uuid()).into(),
                    ]);
                }
                let counted = e
                    .impersonation_id
                    .filter(|_| !matches!(event, DomainEvent::LeadViewed(_)));
                if let Some(session) = counted.map(|i| i.as_uuid()) {
                    let count = i64::try_from(fields.len()).unwrap_or(i64::MAX);
                    match started.iter_mut().find(|s| s.id == session) {
                        Some(new) => new.change_count += count,
                        None => updated.entry(session).or_default().more_changes += count,
                    }
                }
            }
        }
    }
    changes.write(tx).await?;
    named.write(tx).await?;
    for (lead, site) in &erased {
        erase_stored(tx, *site, *lead).await?;
    }
    let mut sessions = Rows::new(
        "INSERT INTO audit_sessions (id, site_id, admin_id, subject_id, reason, started_at, \
         expires_at, ended_at, end_reason, change_count, position, mode)",
        12,
        "",
    );
    for s in started {
        let (ended_at, end_reason) = s.ended.unzip();
        sessions.push([
            s.id.into(),
            s.site_id.into(),
            s.admin_id.into(),
            s.subject_id.into(),
            s.reason.into(),
            s.started_at.into(),
            s.expires_at.into(),
            ended_at.into(),
            end_reason.into(),
            s.change_count.into(),
            s.position.into(),
            s.mode.into(),
        ]);
    }
    sessions.write(tx).await?;
    for (id, update) in updated {
        let (ended_at, end_reason) = update.ended.unzip();
        execute!(
            tx,
            "UPDATE audit_sessions SET change_count = change_count + $1, \
             ended_at = COALESCE($2, ended_at), end_reason = COALESCE($3, end_reason) WHERE id = $4",
            update.more_changes,
            ended_at,
            end_reason,
            id
        )?;
    }
    Ok(())
}

/// A lead's change value as it reads once the lead is erased: exactly what its
/// events' personal values open to then (see `crm_events::vault`), so that a
/// rebuild after the erasure writes the same rows as the erasure leaves.
#[must_use]
pub fn erased_value(field: &str, value: &Value) -> Value {
    let text = match field {
        "note" => "body",
        "task" => "title",
        "communication" => "summary",
        personal if PERSONAL_LEAD_FIELDS.contains(&personal) => {
            return match value {
                Value::String(_) => Value::String(ERASED.to_owned()),
                other => other.clone(),
            };
        }
        _ => return value.clone(),
    };
    let mut value = value.clone();
    if let Some(slot) = value.get_mut(text).filter(|v| v.is_string()) {
        *slot = Value::String(ERASED.to_owned());
    }
    value
}

/// Rewrites the stored changes and names of an erased lead as they read once
/// erased.
async fn erase_stored(tx: &mut Tx<'_>, site: Uuid, lead: Uuid) -> Result<(), StoreError> {
    // The site first: the changes' indexes all begin with it.
    let rows: Vec<(i64, i64, String, String, String)> = fetch_all!(
        tx,
        (i64, i64, String, String, String),
        "SELECT position, seq, field, before, after FROM audit_changes \
         WHERE site_id = $1 AND entity_type = 'lead' AND entity_id = $2",
        site,
        lead
    )?;
    for (position, seq, field, before, after) in rows {
        let erase = |text: &str| -> String {
            serde_json::from_str::<Value>(text)
                .map(|value| erased_value(&field, &value).to_string())
                .unwrap_or_else(|_| text.to_owned())
        };
        let (erased_before, erased_after) = (erase(&before), erase(&after));
        if erased_before != before || erased_after != after {
            execute!(
                tx,
                "UPDATE audit_changes SET before = $1, after = $2 \
                 WHERE site_id = $3 AND position = $4 AND seq = $5",
                erased_before,
                erased_after,
                site,
                position,
                seq
            )?;
        }
    }
    execute!(
        tx,
        "UPDATE audit_labels SET label = $1 WHERE labelled_id = $2",
        ERASED,
        lead
    )?;
    Ok(())
}

/// The name an event gives an entity (its id and the name), if it names one: a
/// site, user, lead or template when created, a lead or template when renamed.
fn label_of(event: &DomainEvent, stream_id: Uuid) -> Option<(Uuid, String)> {
    let renamed = |changes: &[FieldChange]| {
        changes
            .iter()
            .rev()
            .find(|c| c.field == "name")
            .and_then(|c| c.after.as_str().map(str::to_owned))
    };
    match event {
        DomainEvent::SiteCreated(s) => Some((stream_id, s.name.clone())),
        DomainEvent::UserCreated(u) => Some((stream_id, u.name.clone())),
        DomainEvent::LeadCreated(c) => Some((stream_id, c.name.clone())),
        DomainEvent::LeadFieldsUpdated(u) => renamed(&u.changes).map(|name| (stream_id, name)),
        DomainEvent::TemplateCreated(t) => Some((t.template_id.as_uuid(), t.name.clone())),
        DomainEvent::TemplateUpdated(t) => {
            renamed(&t.changes).map(|name| (t.template_id.as_uuid(), name))
        }
        _ => None,
    }
}

/// What an event changed: the entity (type and id) and each field with its value
/// before and after. Creations have `null` befores, deletions `null` afters.
/// `None` for events that change no entity (sign-ins, impersonation sessions).
#[must_use]
pub fn changes_of(
    event: &DomainEvent,
    stream_id: Uuid,
) -> Option<(&'static str, Uuid, Vec<FieldChange>)> {
    let created = |fields: Vec<(&str, Value)>| -> Vec<FieldChange> {
        fields
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(f, v)| FieldChange::new(f, Value::Null, v))
            .collect()
    };
    let one =
        |field: &str, before: Value, after: Value| vec![FieldChange::new(field, before, after)];
    Some(match event {
        DomainEvent::SiteCreated(s) => ("site", stream_id, created(vec![("name", json!(s.name))])),
        DomainEvent::SiteSettingsChanged(c) => ("site", stream_id, c.changes.clone()),
        DomainEvent::UserCreated(u) => (
            "user",
            stream_id,
            created(vec![
                ("name", json!(u.name)),
                ("email", json!(u.email)),
                ("role", json!(u.role)),
            ]),
        ),
        DomainEvent::UserRoleChanged(c) => {
            ("user", stream_id, one("role", json!(c.from), json!(c.to)))
        }
        DomainEvent::UserEmailChanged(c) => {
            ("user", stream_id, one("email", json!(c.from), json!(c.to)))
        }
        DomainEvent::UserDeactivated(_) => {
            ("user", stream_id, one("active", json!(true), json!(false)))
        }
        DomainEvent::UserReactivated(_) => {
            ("user", stream_id, one("active", json!(false), json!(true)))
        }
        // That it changed, never what to.
        DomainEvent::UserPasswordChanged(_) => (
            "user",
            stream_id,
            one("password", Value::Null, json!("changed")),
        ),
        DomainEvent::LeadCreated(c) => (
            "lead",
            stream_id,
            created(vec![
                ("name", json!(c.name)),
                ("email", json!(c.email)),
                ("phone", json!(c.phone)),
                ("source", json!(c.source)),
                ("stage", json!(c.stage)),
                ("tags", json!(c.tags)),
                ("assigned_agent_id", json!(c.assigned_agent_id)),
            ]),
        ),
        DomainEvent::LeadFieldsUpdated(u) => ("lead", stream_id, u.changes.clone()),
        // A view changes nothing: one row, so that the session lists it.
        DomainEvent::LeadViewed(v) => (
            "lead",
            v.lead_id.as_uuid(),
            one(VIEWED, Value::Null, Value::Null),
        ),
        DomainEvent::LeadStageChanged(s) => {
            ("lead", stream_id, one("stage", json!(s.from), json!(s.to)))
        }
        DomainEvent::LeadReassigned(r) => (
            "lead",
            stream_id,
            one("assigned_agent_id", json!(r.from), json!(r.to)),
        ),
        DomainEvent::LeadTagAdded(t) => ("lead", stream_id, one("tag", Value::Null, json!(t.tag))),
        DomainEvent::LeadTagRemoved(t) => {
            ("lead", stream_id, one("tag", json!(t.tag), Value::Null))
        }
        DomainEvent::LeadNoteAdded(n) => (
            "lead",
            stream_id,
            one(
                "note",
                Value::Null,
                json!({"id": n.note_id, "body": n.body}),
            ),
        ),
        DomainEvent::LeadTaskCreated(t) => (
            "lead",
            stream_id,
            one(
                "task",
                Value::Null,
                json!({"id": t.task_id, "title": t.title, "due_at": t.due_at}),
            ),
        ),
        DomainEvent::LeadTaskCompleted(t) => (
            "lead",
            stream_id,
            one(
                "task",
                json!({"id": t.task_id, "completed": false}),
                json!({"id": t.task_id, "completed": true}),
            ),
        ),
        DomainEvent::LeadCommunicationLogged(c) => (
            "lead",
            stream_id,
            one(
                "communication",
                Value::Null,
                json!({"id": c.communication_id, "channel": c.channel, "direction": c.direction, "summary": c.summary}),
            ),
        ),
        DomainEvent::LeadArchived(_) => (
            "lead",
            stream_id,
            one("archived", json!(false), json!(true)),
        ),
        // The reason is recorded as given (no personal data, by its contract).
        DomainEvent::LeadErased(e) => (
            "lead",
            stream_id,
            vec![
                FieldChange::new("erased", json!(false), json!(true)),
                FieldChange::new("reason", Value::Null, json!(e.reason)),
            ],
        ),
        DomainEvent::UserSettingsChanged(c) => ("settings", stream_id, c.changes.clone()),
        DomainEvent::TemplateCreated(t) => (
            "template",
            t.template_id.as_uuid(),
            created(vec![
                ("kind", json!(t.kind)),
                ("name", json!(t.name)),
                ("subject", json!(t.subject)),
                ("body", json!(t.body)),
            ]),
        ),
        DomainEvent::TemplateUpdated(t) => ("template", t.template_id.as_uuid(), t.changes.clone()),
        DomainEvent::TemplateDeleted(t) => {
            let fields = [
                ("kind", json!(t.kind)),
                ("name", json!(t.name)),
                ("subject", json!(t.subject)),
                ("body", json!(t.body)),
            ];
            let deleted = fields
                .into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(f, v)| FieldChange::new(f, v, Value::Null))
                .collect();
            ("template", t.template_id.as_uuid(), deleted)
        }
        // The decision, on the session (its changes put back are rows of their own).
        DomainEvent::ImpersonationReverted(r) => (
            "session",
            stream_id,
            one(
                "reverted",
                Value::Null,
                json!({"reason": r.reason, "reverted": r.reverted, "conflicts": r.conflicts,
                    "not_revertible": r.not_revertible}),
            ),
        ),
        DomainEvent::UserLoggedIn(_)
        | DomainEvent::UserLoggedOut(_)
        | DomainEvent::NotificationsRead(_)
        | DomainEvent::ImpersonationStarted(_)
        | DomainEvent::ImpersonationEnded(_) => return None,
    })
}

/// One impersonation session.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ImpersonationSession {
    pub id: Uuid,
    #[serde(skip)]
    pub site_id: Uuid,
    pub admin_id: Uuid,
    pub subject_id: Uuid,
    pub reason: Option<String>,
    pub started_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub end_reason: Option<String>,
    pub change_count: i64,
    #[serde(skip)]
    pub position: i64,
    /// `edit`, or `view` for a session that could only look.
    pub mode: String,
}

/// One change.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub position: i64,
    #[serde(skip)]
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub event_type: String,
    pub entity_type: String,
    pub entity_id: Uuid,
    pub field: String,
    pub before: Value,
    pub after: Value,
    pub actor_id: Uuid,
    pub subject_id: Uuid,
    pub impersonation_id: Option<Uuid>,
    /// What changed, by name: the lead's or template's name, the user's (for a
    /// user or their settings) or the site's; the last name it had.
    pub entity_label: Option<String>,
    /// Who acted, by name ("System" for the site's setup).
    pub actor_name: Option<String>,
    /// Whose account it was, by name.
    pub subject_name: Option<String>,
    /// The reason given for the "Log in as user" session it was made in.
    pub impersonation_reason: Option<String>,
    /// `change`, or `view`: a lead opened while logged in as its agent
    /// (`LeadViewed`, field `viewed`), which changed nothing.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub kind: &'static str,
}

#[derive(Debug, sqlx::FromRow)]
struct ChangeRow {
    position: i64,
    seq: i64,
    at: DateTime<Utc>,
    event_type: String,
    entity_type: String,
    entity_id: Uuid,
    field: String,
    before: String,
    after: String,
    actor_id: Uuid,
    subject_id: Uuid,
    impersonation_id: Option<Uuid>,
    entity_label: Option<String>,
    actor_name: Option<String>,
    subject_name: Option<String>,
    impersonation_reason: Option<String>,
}

/// What the log records as the actor of the site's setup (no human).
const SYSTEM: &str = "System";

impl From<ChangeRow> for Change {
    fn from(r: ChangeRow) -> Self {
        let kind = if r.event_type == "LeadViewed" {
            "view"
        } else {
            "change"
        };
        Change {
            position: r.position,
            seq: r.seq,
            at: r.at,
            event_type: r.event_type,
            entity_type: r.entity_type,
            entity_id: r.entity_id,
            field: r.field,
            before: serde_json::from_str(&r.before).unwrap_or(Value::Null),
            after: serde_json::from_str(&r.after).unwrap_or(Value::Null),
            actor_id: r.actor_id,
            impersonation_id: r.impersonation_id,
            entity_label: r.entity_label,
            actor_name: person(r.actor_id, r.actor_name),
            subject_name: person(r.subject_id, r.subject_name),
            impersonation_reason: r.impersonation_reason,
            subject_id: r.subject_id,
            kind,
        }
    }
}

fn person(id: Uuid, name: Option<String>) -> Option<String> {
    if id.is_nil() {
        Some(SYSTEM.to_owned())
    } else {
        name
    }
}

const SESSION_COLUMNS: &str =
    "SELECT id, site_id, admin_id, subject_id, reason, started_at, expires_at, ended_at, \
     end_reason, change_count, position, mode FROM audit_sessions ";
/// The changes' columns with their names as they were at `as_of` (the latest when
/// `None`), up to `FROM audit_changes `.
fn change_columns(as_of: Option<i64>) -> Sql {
    let mut sql = Sql::new(
        "SELECT position, seq, at, event_type, entity_type, entity_id, field, before, after, \
         actor_id, subject_id, impersonation_id",
    );
    let bound = as_of.unwrap_or(i64::MAX);
    for (column, name) in [
        ("entity_id", "entity_label"),
        ("actor_id", "actor_name"),
        ("subject_id", "subject_name"),
    ] {
        sql.push(&format!(
            ", (SELECT label FROM audit_labels WHERE labelled_id = audit_changes.{column} \
             AND audit_labels.position <= "
        ))
        .bind(Bind::I64(bound))
        .push(&format!(
            " ORDER BY audit_labels.position DESC LIMIT 1) AS {name}"
        ));
    }
    sql.push(
        ", (SELECT reason FROM audit_sessions WHERE audit_sessions.id = \
         audit_changes.impersonation_id) AS impersonation_reason FROM audit_changes ",
    );
    sql
}

/// Which sessions to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionFilter {
    pub admin_id: Option<UserId>,
    pub subject_id: Option<UserId>,
    /// Started at or after.
    pub from: Option<DateTime<Utc>>,
    /// Started before.
    pub to: Option<DateTime<Utc>>,
    pub order: Order,
}

/// The sessions query for one page, newest first unless asked otherwise (exposed for `EXPLAIN` in tests).
///
/// # Errors
/// [`QueryError::BadCursor`].
pub fn sessions_query(
    site: SiteId,
    filter: &SessionFilter,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Sql, QueryError> {
    let mut sql = Sql::new(SESSION_COLUMNS);
    // Lead with the most selective indexed column.
    match (filter.subject_id, filter.admin_id) {
        (Some(subject), admin) => {
            sql.push("WHERE subject_id = ")
                .bind(Bind::Uuid(subject.as_uuid()));
            sql.push(" AND site_id = ").bind(Bind::Uuid(site.as_uuid()));
            if let Some(admin) = admin {
                sql.push(" AND admin_id = ")
                    .bind(Bind::Uuid(admin.as_uuid()));
            }
        }
        (None, Some(admin)) => {
            sql.push("WHERE admin_id = ")
                .bind(Bind::Uuid(admin.as_uuid()));
            sql.push(" AND site_id = ").bind(Bind::Uuid(site.as_uuid()));
        }
        (None, None) => {
            sql.push("WHERE site_id = ")
                .bind(Bind::Uuid(site.as_uuid()));
        }
    }
    if let Some(from) = filter.from {
        sql.push(" AND started_at >= ").bind(Bind::Time(from));
    }
    if let Some(to) = filter.to {
        sql.push(" AND started_at < ").bind(Bind::Time(to));
    }
    let (past, direction) = filter.order.after_and_direction();
    if let Some(cursor) = cursor {
        let last = decode_cursor(cursor, |k| i64_at(k, 0))?;
        sql.push(&format!(" AND position {past} "))
            .bind(Bind::I64(last));
    }
    sql.push(&format!(" ORDER BY position {direction} LIMIT "))
        .bind(Bind::I64(i64::from(limit) + 1));
    Ok(sql)
}

/// A page of the site's impersonation sessions, newest first unless asked otherwise.
///
/// # Errors
/// [`QueryError::BadCursor`]; store failures.
pub async fn sessions(
    db: &Database,
    site: SiteId,
    filter: &SessionFilter,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page<ImpersonationSession>, QueryError> {
    let rows: Vec<ImpersonationSession> = sessions_query(site, filter, cursor, limit)?
        .fetch_all(db)
        .await?;
    Ok(paginate(rows, limit, |s| json!([s.position])))
}

/// One session of the site.
///
/// # Errors
/// Store failures.
pub async fn session(
    db: &Database,
    site: SiteId,
    id: ImpersonationId,
) -> Result<Option<ImpersonationSession>, QueryError> {
    Ok(on_pool!(db, |pool| sqlx::query_as(&format!(
        "{SESSION_COLUMNS}WHERE id = $1 AND site_id = $2"
    ))
    .bind(id.as_uuid())
    .bind(site.as_uuid())
    .fetch_optional(pool)
    .await?))
}

/// Every change made in one session, in order.
///
/// # Errors
/// Store failures.
pub async fn session_changes(
    db: &Database,
    id: ImpersonationId,
) -> Result<Vec<Change>, QueryError> {
    let mut sql = change_columns(None);
    sql.push("WHERE impersonation_id = ")
        .bind(Bind::Uuid(id.as_uuid()))
        .push(" ORDER BY position, seq");
    let rows: Vec<ChangeRow> = sql.fetch_all(db).await?;
    Ok(rows.into_iter().map(Change::from).collect())
}

/// Which changes to list or export.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangeFilter {
    pub actor_id: Option<UserId>,
    pub subject_id: Option<UserId>,
    pub entity_type: Option<String>,
    pub entity_id: Option<Uuid>,
    /// Only changes made while impersonating (true) or not (false).
    pub impersonated: Option<bool>,
    /// Only the changes of one "Log in as user" session.
    pub impersonation_id: Option<ImpersonationId>,
    /// Only the views (`true`: leads opened while logged in as their agent) or only
    /// the changes (`false`).
    pub views: Option<bool>,
    /// At or after.
    pub from: Option<DateTime<Utc>>,
    /// Before.
    pub to: Option<DateTime<Utc>>,
    /// Only changes at or before this position, named as they were then: the
    /// same filter and `up_to` always give the same changes.
    pub up_to: Option<i64>,
    pub order: Order,
}

/// The changes query for one page, newest first unless asked otherwise (exposed for `EXPLAIN` in tests).
///
/// # Errors
/// [`QueryError::BadCursor`].
pub fn changes_query(
    site: SiteId,
    filter: &ChangeFilter,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Sql, QueryError> {
    let mut sql = change_columns(filter.up_to);
    sql.push("WHERE site_id = ")
        .bind(Bind::Uuid(site.as_uuid()));
    if let Some(up_to) = filter.up_to {
        sql.push(" AND position <= ").bind(Bind::I64(up_to));
    }
    if let Some(actor) = filter.actor_id {
        sql.push(" AND actor_id = ")
            .bind(Bind::Uuid(actor.as_uuid()));
    }
    if let Some(subject) = filter.subject_id {
        sql.push(" AND subject_id = ")
            .bind(Bind::Uuid(subject.as_uuid()));
    }
    if let Some(entity_type) = &filter.entity_type {
        sql.push(" AND entity_type = ")
            .bind(Bind::Text(entity_type.clone()));
    }
    if let Some(entity) = filter.entity_id {
        sql.push(" AND entity_id = ").bind(Bind::Uuid(entity));
    }
    if let Some(session) = filter.impersonation_id {
        sql.push(" AND impersonation_id = ")
            .bind(Bind::Uuid(session.as_uuid()));
    }
    match filter.impersonated {
        Some(true) => sql.push(" AND impersonation_id IS NOT NULL"),
        Some(false) => sql.push(" AND impersonation_id IS NULL"),
        None => &mut sql,
    };
    match filter.views {
        Some(true) => sql.push(" AND event_type = 'LeadViewed'"),
        Some(false) => sql.push(" AND event_type <> 'LeadViewed'"),
        None => &mut sql,
    };
    if let Some(from) = filter.from {
        sql.push(" AND at >= ").bind(Bind::Time(from));
    }
    if let Some(to) = filter.to {
        sql.push(" AND at < ").bind(Bind::Time(to));
    }
    let (past, direction) = filter.order.after_and_direction();
    if let Some(cursor) = cursor {
        let (position, seq) = decode_cursor(cursor, |k| Some((i64_at(k, 0)?, i64_at(k, 1)?)))?;
        sql.push(&format!(" AND (position, seq) {past} ("))
            .bind(Bind::I64(position))
            .push(", ")
            .bind(Bind::I64(seq))
            .push(")");
    }
    sql.push(&format!(
        " ORDER BY position {direction}, seq {direction} LIMIT "
    ))
    .bind(Bind::I64(i64::from(limit) + 1));
    Ok(sql)
}

/// A page of the site's changes, newest first unless asked otherwise. Paging through every page reads the
/// whole trail with flat memory (what an export does).
///
/// # Errors
/// [`QueryError::BadCursor`]; store failures.
pub async fn changes(
    db: &Database,
    site: SiteId,
    filter: &ChangeFilter,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page<Change>, QueryError> {
    let rows: Vec<ChangeRow> = changes_query(site, filter, cursor, limit)?
        .fetch_all(db)
        .await?;
    let changes: Vec<Change> = rows.into_iter().map(Change::from).collect();
    Ok(paginate(changes, limit, |c| json!([c.position, c.seq])))
}
