//! The projections as they were at a past position of the log: a user's Lead
//! Manager, one lead with its notes, tasks and communications, and a user's
//! settings and templates, exactly as the projections showed them when the log's
//! head was there.
//!
//! Each is folded in memory from the streams that made it, read up to the position
//! (the only reads of the log that answer a page): the Lead Manager's leads with
//! the projection's own fold ([`lead_manager::fold_row`]), filtered, sorted and
//! paged as its queries do; the settings with the fold the settings projection
//! runs in SQL, restated here over values. Which leads a user's list could have
//! held at a position is kept by the Lead Manager (`lead_assignments`: each user a
//! lead was ever assigned to, from when). A lead with no event after the position
//! is read from its row as it is: the row is the fold of the lead's own events, all
//! of which the projection had folded by then; only the others are folded here.
//!
//! A lead erased since reads as erased at every position: its personal data is
//! gone from the log's point of view too.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use crm_events::catalog::values::{Role, Stage};
use crm_events::ids::{LeadId, SiteId, UserId};
use crm_events::{on_pool, Database, DomainEvent, EventStore, Position, StreamType};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::lead_manager::{
    self, created_row, fold_row, set_next_due, tags_of, Communication, Effect, Lead, LeadFilter,
    LeadRow, LeadSort, Note, Owner, Task, TaskRow,
};
use crate::projection::Decoded;
use crate::query::{paginate, Page, QueryError};
use crate::settings::Template;

/// A lead folded in memory, with what its events added.
#[derive(Debug, Clone)]
struct PastLead {
    row: LeadRow,
    /// Id, body, author, when.
    notes: Vec<(Uuid, String, Uuid, DateTime<Utc>)>,
    tasks: Vec<TaskRow>,
    /// Id, channel, direction, summary, author, when.
    communications: Vec<(Uuid, String, String, String, Uuid, DateTime<Utc>)>,
}

impl PastLead {
    /// Blanks what an erasure blanks, as the projection's fold and its queries
    /// leave an erased lead (its dates and version stay those of `at`).
    fn erase(&mut self) {
        lead_manager::erase_row(&mut self.row);
        for note in &mut self.notes {
            note.1.clear();
        }
        for task in &mut self.tasks {
            task.title.clear();
        }
        for communication in &mut self.communications {
            communication.3.clear();
        }
    }
}

/// Folds the events of some leads (in position order) into their rows, notes,
/// tasks and communications.
fn fold(events: Vec<crm_events::RecordedEvent>) -> Result<BTreeMap<Uuid, PastLead>, QueryError> {
    let mut leads: BTreeMap<Uuid, PastLead> = BTreeMap::new();
    for recorded in events {
        let decoded = Decoded::new(recorded)?;
        let e = &decoded.recorded;
        let id = e.stream.id;
        if let Some(row) = created_row(&decoded) {
            leads.insert(
                id,
                PastLead {
                    row,
                    notes: Vec::new(),
                    tasks: Vec::new(),
                    communications: Vec::new(),
                },
            );
        }
        let Some(lead) = leads.get_mut(&id) else {
            continue;
        };
        let (author, at) = (e.subject_id.as_uuid(), e.recorded_at);
        let mut due_changed = false;
        match fold_row(&mut lead.row, &decoded) {
            Effect::Nothing | Effect::Assigned(_) => {}
            Effect::Note { id, body } => lead.notes.push((id, body.to_owned(), author, at)),
            Effect::Task(task) => {
                lead.tasks.push(task);
                due_changed = true;
            }
            Effect::TaskCompleted(task) => {
                if let Some(task) = lead
                    .tasks
                    .iter_mut()
                    .find(|t| t.id == task && t.completed_at.is_none())
                {
                    task.completed_at = Some(at);
                }
                due_changed = true;
            }
            Effect::Communication {
                id,
                channel,
                direction,
                summary,
            } => lead.communications.push((
                id,
                channel.to_owned(),
                direction.to_owned(),
                summary.to_owned(),
                author,
                at,
            )),
            Effect::Erased => lead.erase(),
        }
        if due_changed {
            let open = lead.tasks.iter().filter(|t| t.completed_at.is_none());
            set_next_due(&mut lead.row, open.map(|t| t.due_at));
        }
    }
    Ok(leads)
}

/// The leads `ids` as they were at `at`, with those erased since read as erased.
async fn leads_at(
    store: &EventStore,
    ids: &[Uuid],
    erased_now: &[Uuid],
    at: Position,
) -> Result<BTreeMap<Uuid, PastLead>, QueryError> {
    let events = store
        .read_streams_up_to(StreamType::Lead, ids, &[], at)
        .await?;
    let mut leads = fold(events)?;
    for id in erased_now {
        if let Some(lead) = leads.get_mut(id).filter(|l| !l.row.erased) {
            lead.erase();
        }
    }
    Ok(leads)
}

/// Whether a lead's row is in the filter's list (`with_stage` false for the counts
/// per stage): what [`LeadFilter`]'s `WHERE` clause says, over a row in memory.
fn listed(row: &LeadRow, filter: &LeadFilter, with_stage: bool) -> bool {
    let owned = match filter.owner {
        Owner::AssignedTo(user) => row.assigned_agent_id == Some(user.as_uuid()),
        Owner::Site(site) => row.site_id == site.as_uuid(),
    };
    let stage = match (filter.stage, with_stage) {
        (Some(stage), true) => row.stage == stage.as_str(),
        _ => true,
    };
    let tag = filter
        .tag
        .as_ref()
        .is_none_or(|tag| tags_of(row).contains(tag));
    let text = match filter.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        None => true,
        Some(q) => {
            let q = q.to_lowercase();
            row.name_key.contains(&q)
                || row
                    .email
                    .as_deref()
                    .unwrap_or("")
                    .to_lowercase()
                    .contains(&q)
                || row.phone.as_deref().unwrap_or("").contains(&q)
        }
    };
    owned && !row.archived && stage && tag && text
}

/// Orders rows as the list query's `ORDER BY` does.
fn compare(sort: LeadSort, a: &LeadRow, b: &LeadRow) -> Ordering {
    match sort {
        LeadSort::UpdatedAt => (a.updated_at, a.id).cmp(&(b.updated_at, b.id)),
        LeadSort::UpdatedAtDesc => (b.updated_at, b.id).cmp(&(a.updated_at, a.id)),
        LeadSort::Name => (&a.name_key, a.id).cmp(&(&b.name_key, b.id)),
        LeadSort::NextTaskDueAt => (a.due_key, a.id).cmp(&(b.due_key, b.id)),
    }
}

/// A user's Lead Manager at `at`: one page of the leads assigned to them then (the
/// filter's owner is taken to be `user`), and the counts per stage, as
/// [`lead_manager::list`] and [`lead_manager::counts_by_stage`] answered then.
///
/// # Errors
/// [`QueryError::BadCursor`]; store failures.
pub async fn lead_manager(
    store: &EventStore,
    user: UserId,
    at: Position,
    filter: &LeadFilter,
    sort: LeadSort,
    cursor: Option<&str>,
    limit: u32,
) -> Result<(Page<Lead>, BTreeMap<String, i64>), QueryError> {
    let filter = LeadFilter {
        owner: Owner::AssignedTo(user),
        ..filter.clone()
    };
    let after = cursor
        .map(|c| lead_manager::cursor_key(sort, c))
        .transpose()?;
    // Every lead the user held by then, as its row is now: one lookup by id per
    // lead (PostgreSQL's planner would rather scan every row for a large list;
    // `OFFSET 0` keeps the subquery a lookup; SQLite takes CROSS JOIN's order as
    // given).
    let rows: Vec<LeadRow> = match store.database() {
        Database::Sqlite(pool) => {
            sqlx::query_as(
                "SELECT v.* FROM lead_assignments a CROSS JOIN leads_view v \
                 WHERE a.agent_id = $1 AND a.since_position <= $2 AND v.id = a.lead_id",
            )
            .bind(user.as_uuid())
            .bind(at.0)
            .fetch_all(pool)
            .await?
        }
        Database::Postgres(pool) => {
            sqlx::query_as(
                "SELECT v.* FROM lead_assignments a CROSS JOIN LATERAL \
                 (SELECT * FROM leads_view WHERE id = a.lead_id OFFSET 0) v \
                 WHERE a.agent_id = $1 AND a.since_position <= $2",
            )
            .bind(user.as_uuid())
            .bind(at.0)
            .fetch_all(pool)
            .await?
        }
    };
    // A lead whose last event is at or before `at` was then what its row is now
    // (the row is the fold of its own events); the others are folded from the log.
    let (unchanged, changed): (Vec<LeadRow>, Vec<LeadRow>) =
        rows.into_iter().partition(|row| row.position <= at.0);
    let ids: Vec<Uuid> = changed.iter().map(|row| row.id).collect();
    let erased: Vec<Uuid> = changed
        .iter()
        .filter(|row| row.erased)
        .map(|row| row.id)
        .collect();
    let mut leads: BTreeMap<Uuid, LeadRow> = leads_at(store, &ids, &erased, at)
        .await?
        .into_iter()
        .map(|(id, lead)| (id, lead.row))
        .collect();
    leads.extend(unchanged.into_iter().map(|row| (row.id, row)));

    let mut counts: BTreeMap<String, i64> = Stage::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), 0))
        .collect();
    for row in leads.values().filter(|row| listed(row, &filter, false)) {
        *counts.entry(row.stage.clone()).or_default() += 1;
    }
    let mut rows: Vec<&LeadRow> = leads
        .values()
        .filter(|row| listed(row, &filter, true))
        .filter(|row| after.as_ref().is_none_or(|key| key.is_before(sort, row)))
        .collect();
    rows.sort_by(|a, b| compare(sort, a, b));
    rows.truncate(limit as usize + 1);
    let items: Vec<Lead> = rows.into_iter().cloned().map(Lead::from).collect();
    Ok((
        paginate(items, limit, lead_manager::cursor_of(sort)),
        counts,
    ))
}

/// One lead as it was at `at`, with its notes, tasks and communications as
/// [`lead_manager::get`], [`lead_manager::notes`], [`lead_manager::tasks`] and
/// [`lead_manager::communications`] answered then; `None` when it did not exist
/// yet. Authors are named as they are named now.
///
/// # Errors
/// Store failures.
pub async fn lead(
    store: &EventStore,
    id: LeadId,
    at: Position,
) -> Result<Option<(Lead, Vec<Note>, Vec<Task>, Vec<Communication>)>, QueryError> {
    let erased = lead_manager::get(store.database(), id)
        .await?
        .is_some_and(|lead| lead.erased);
    let ids = [id.as_uuid()];
    let erased_now: &[Uuid] = if erased { &ids } else { &[] };
    let Some(lead) = leads_at(store, &ids, erased_now, at)
        .await?
        .remove(&id.as_uuid())
    else {
        return Ok(None);
    };
    let names = author_names(store, SiteId::from_uuid(lead.row.site_id)).await?;
    let name_of = |author: &Uuid| names.get(author).cloned();
    let text = |s: String| (!s.is_empty()).then_some(s);
    let mut notes: Vec<Note> = lead
        .notes
        .into_iter()
        .map(|(id, body, author_id, created_at)| Note {
            id,
            author_name: name_of(&author_id),
            body: text(body),
            created_at,
            author_id,
        })
        .collect();
    notes.sort_by_key(|n| (n.created_at, n.id));
    let mut tasks: Vec<Task> = lead
        .tasks
        .into_iter()
        .map(|t| Task {
            id: t.id,
            title: text(t.title),
            due_at: t.due_at,
            completed_at: t.completed_at,
        })
        .collect();
    tasks.sort_by_key(|t| (t.due_at, t.id));
    let mut communications: Vec<Communication> = lead
        .communications
        .into_iter()
        .map(
            |(id, channel, direction, summary, author_id, created_at)| Communication {
                id,
                channel,
                direction,
                summary: text(summary),
                created_at,
                author_name: name_of(&author_id),
                author_id,
            },
        )
        .collect();
    communications.sort_by_key(|c| (c.created_at, c.id));
    Ok(Some((Lead::from(lead.row), notes, tasks, communications)))
}

/// A user's role at `at`; `None` when the account did not exist yet.
///
/// # Errors
/// Store failures.
pub async fn role_at(
    store: &EventStore,
    user: UserId,
    at: Position,
) -> Result<Option<Role>, QueryError> {
    let events = store
        .read_streams_up_to(
            StreamType::User,
            &[user.as_uuid()],
            &["UserCreated", "UserRoleChanged"],
            at,
        )
        .await?;
    let mut role = None;
    for recorded in events {
        match Decoded::new(recorded)?.event {
            DomainEvent::UserCreated(created) => role = Some(created.role),
            DomainEvent::UserRoleChanged(changed) => role = Some(changed.to),
            _ => {}
        }
    }
    Ok(role)
}

/// The names of a site's users, by id.
async fn author_names(
    store: &EventStore,
    site: SiteId,
) -> Result<HashMap<Uuid, String>, QueryError> {
    let rows: Vec<(Uuid, String)> = on_pool!(store.database(), |pool| sqlx::query_as(
        "SELECT id, name FROM users_view WHERE site_id = $1"
    )
    .bind(site.as_uuid())
    .fetch_all(pool)
    .await?);
    Ok(rows.into_iter().collect())
}

/// A user's settings and templates at `at`: the keys they had changed (as
/// [`crate::settings::get`] answered then, with the stream's version) and their
/// templates by name (as [`crate::settings::templates`]).
///
/// # Errors
/// Store failures.
pub async fn settings(
    store: &EventStore,
    user: UserId,
    at: Position,
) -> Result<(Map<String, Value>, i64, Vec<Template>), QueryError> {
    let events = store
        .read_streams_up_to(StreamType::Settings, &[user.as_uuid()], &[], at)
        .await?;
    let mut values = Map::new();
    let mut version = 0;
    let mut templates: BTreeMap<Uuid, Template> = BTreeMap::new();
    for recorded in events {
        let decoded = Decoded::new(recorded)?;
        let at = decoded.recorded.recorded_at;
        version = i64::try_from(decoded.recorded.stream_version).unwrap_or(i64::MAX);
        match &decoded.event {
            DomainEvent::UserSettingsChanged(changed) => {
                for change in &changed.changes {
                    values.insert(change.field.clone(), change.after.clone());
                }
            }
            DomainEvent::TemplateCreated(t) => {
                templates.insert(
                    t.template_id.as_uuid(),
                    Template {
                        id: t.template_id.as_uuid(),
                        kind: t.kind.as_str().to_owned(),
                        name: t.name.clone(),
                        subject: t.subject.clone(),
                        body: t.body.clone(),
                        version: 1,
                        created_at: at,
                        updated_at: at,
                    },
                );
            }
            DomainEvent::TemplateUpdated(t) => {
                if let Some(template) = templates.get_mut(&t.template_id.as_uuid()) {
                    for change in &t.changes {
                        let value = change.after.as_str().map(str::to_owned);
                        match change.field.as_str() {
                            "name" => template.name = value.unwrap_or_default(),
                            "subject" => template.subject = value,
                            "body" => template.body = value.unwrap_or_default(),
                            _ => {}
                        }
                    }
                    template.version += 1;
                    template.updated_at = at;
                }
            }
            DomainEvent::TemplateDeleted(t) => {
                templates.remove(&t.template_id.as_uuid());
            }
            _ => {}
        }
    }
    let mut templates: Vec<Template> = templates.into_values().collect();
    templates.sort_by(|a, b| (&a.name, a.id).cmp(&(&b.name, b.id)));
    Ok((values, version, templates))
}
