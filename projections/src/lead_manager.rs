//! The lead manager projection: for each user, the leads assigned to them with their
//! current fields, stage, tags, last contact and next open task; each lead's notes,
//! tasks and communications; counts per stage. Filters by stage, tag and text, four
//! sort orders, cursor pagination, each backed by an index.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, TimeZone, Utc};
use crm_events::catalog::values::Stage;
use crm_events::ids::{LeadId, SiteId, UserId};
use crm_events::store::bulk::fetch_in;
use crm_events::{on_pool, Database, DomainEvent, Rows, StoreError, Tx, Updates};
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::projection::{Decoded, Projection};
use crate::query::{
    contains_pattern, decode_cursor, paginate, text_at, time_at, uuid_at, Bind, Page, QueryError,
    Sql,
};
use crate::sql::execute;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct LeadManager {
    cache: CachedRows,
}

/// Copies of the lead rows this fold last wrote, so that the next fold of the
/// projector's runs need not read back what the last one wrote. Only used in, and
/// only filled by, [undisturbed](Tx::undisturbed) transactions; any other
/// transaction that folds (after another process folded, after a failed fold)
/// forgets them all.
#[derive(Debug, Default)]
struct CachedRows(Mutex<HashMap<Uuid, LeadRow>>);

/// At most this many rows are cached (a few MB); past it, the copies start again.
const CACHED_ROWS_AT_MOST: usize = 10_000;

impl CachedRows {
    /// The cached copies of the rows of `ids` (those there are).
    fn take(&self, tx: &Tx<'_>, ids: &BTreeSet<Uuid>) -> BTreeMap<Uuid, LeadRow> {
        let Ok(mut cached) = self.0.lock() else {
            return BTreeMap::new();
        };
        if !tx.undisturbed() {
            cached.clear();
            return BTreeMap::new();
        }
        ids.iter()
            .filter_map(|id| cached.get(id).map(|row| (*id, row.clone())))
            .collect()
    }

    /// Keeps the rows as `tx` leaves them.
    fn keep(&self, tx: &Tx<'_>, leads: &BTreeMap<Uuid, Touched>) {
        let Ok(mut cached) = self.0.lock() else {
            return;
        };
        if !tx.undisturbed() {
            return;
        }
        if cached.len() + leads.len() > CACHED_ROWS_AT_MOST {
            cached.clear();
        }
        for (id, touched) in leads {
            cached.insert(*id, touched.row.clone());
        }
    }
}

/// The sort key of a lead without open tasks: after every real due date.
fn no_task_due() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 12, 31, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The projection's name, in the checkpoint table and wherever a read names what
/// it reads.
pub const NAME: &str = "lead_manager";

impl Projection for LeadManager {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> i64 {
        // 2: `lead_assignments`.
        2
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "lead_assignments",
            "lead_tags",
            "lead_notes",
            "lead_tasks",
            "lead_communications",
            "leads_view",
        ]
    }

    fn folding_indexes(&self) -> &'static [&'static str] {
        // A task's lead's open tasks are read to find its next due date.
        &["lead_tasks_by_lead"]
    }

    fn reads(&self, event: &DomainEvent) -> bool {
        event.stream_type() == crm_events::StreamType::Lead
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut Tx<'_>,
        events: &'a [&'a Decoded],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(apply(tx, events, &self.cache))
    }
}

const SELECT_LEADS_IN: &str =
    "SELECT id, site_id, assigned_agent_id, name, name_key, email, phone, \
     source, stage, tags, archived, erased, last_contacted_at, next_task_due_at, due_key, \
     created_at, updated_at, version, position FROM leads_view WHERE id IN";

const SELECT_OPEN_TASKS_IN: &str = "SELECT id, lead_id, title, due_at, completed_at, created_at \
     FROM lead_tasks WHERE completed_at IS NULL AND lead_id IN";

/// A task row, kept while the batch folds.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct TaskRow {
    pub(crate) id: Uuid,
    pub(crate) lead_id: Uuid,
    pub(crate) title: String,
    pub(crate) due_at: DateTime<Utc>,
    pub(crate) completed_at: Option<DateTime<Utc>>,
    pub(crate) created_at: DateTime<Utc>,
}

/// A lead the batch touches: its row as folded so far, and as it was before the
/// batch (`None` for a lead the batch created).
struct Touched {
    row: LeadRow,
    before: Option<LeadRow>,
}

/// A row's tags (kept as JSON text, as the column holds them).
pub(crate) fn tags_of(row: &LeadRow) -> Vec<String> {
    serde_json::from_str(&row.tags).unwrap_or_default()
}

/// Folds a batch in memory and writes each table with a few statements: the leads
/// it touches are read once (with the open tasks of those that got task events),
/// folded event by event, and written back; notes, tasks and communications are
/// inserted in bulk; tags are added and removed by difference.
async fn apply(tx: &mut Tx<'_>, events: &[&Decoded], cache: &CachedRows) -> Result<(), StoreError> {
    let created: BTreeSet<Uuid> = events
        .iter()
        .filter(|d| matches!(d.event, DomainEvent::LeadCreated(_)))
        .map(|d| d.recorded.stream.id)
        .collect();
    let existing: BTreeSet<Uuid> = events
        .iter()
        .map(|d| d.recorded.stream.id)
        .filter(|id| !created.contains(id))
        .collect();
    let with_tasks: BTreeSet<Uuid> = events
        .iter()
        .filter(|d| {
            matches!(
                d.event,
                DomainEvent::LeadTaskCreated(_) | DomainEvent::LeadTaskCompleted(_)
            )
        })
        .map(|d| d.recorded.stream.id)
        .filter(|id| existing.contains(id))
        .collect();

    let copies = cache.take(tx, &existing);
    let keys: Vec<Bind> = existing
        .iter()
        .filter(|id| !copies.contains_key(id))
        .map(|id| Bind::Uuid(*id))
        .collect();
    let read = fetch_in::<LeadRow>(tx, SELECT_LEADS_IN, 1, &keys).await?;
    let mut leads: BTreeMap<Uuid, Touched> = read
        .into_iter()
        .chain(copies.into_values())
        .map(|row| {
            let before = Some(row.clone());
            (row.id, Touched { row, before })
        })
        .collect();
    let keys: Vec<Bind> = with_tasks.iter().map(|id| Bind::Uuid(*id)).collect();
    let mut tasks: BTreeMap<Uuid, TaskRow> =
        fetch_in::<TaskRow>(tx, SELECT_OPEN_TASKS_IN, 1, &keys)
            .await?
            .into_iter()
            .map(|task| (task.id, task))
            .collect();

    let mut notes = Rows::new(
        "INSERT INTO lead_notes (id, lead_id, body, author_id, created_at)",
        5,
        "",
    );
    let mut communications = Rows::new(
        "INSERT INTO lead_communications (id, lead_id, channel, direction, summary, author_id, \
         created_at)",
        7,
        "",
    );
    let mut erased: Vec<Uuid> = Vec::new();
    let mut assignments = Rows::new(
        "INSERT INTO lead_assignments (agent_id, lead_id, since_position)",
        3,
        "ON CONFLICT (agent_id, lead_id) DO NOTHING",
    );
    let mut changed_tasks: BTreeSet<Uuid> = BTreeSet::new();
    let mut due_changed: BTreeSet<Uuid> = BTreeSet::new();
    for decoded in events {
        let e = &decoded.recorded;
        let id = e.stream.id;
        let at = e.recorded_at;
        if let Some(row) = created_row(decoded) {
            leads.insert(id, Touched { row, before: None });
        }
        // Events of a lead the projection never saw created change nothing.
        let Some(lead) = leads.get_mut(&id) else {
            continue;
        };
        match fold_row(&mut lead.row, decoded) {
            Effect::Nothing => {}
            Effect::Assigned(agent) => {
                assignments.push([agent.into(), id.into(), e.position.0.into()]);
            }
            Effect::Note { id: note, body } => notes.push([
                note.into(),
                id.into(),
                body.into(),
                e.subject_id.as_uuid().into(),
                at.into(),
            ]),
            Effect::Task(task) => {
                changed_tasks.insert(task.id);
                tasks.insert(task.id, task);
                due_changed.insert(id);
            }
            Effect::TaskCompleted(task) => {
                if let Some(task) = tasks.get_mut(&task) {
                    task.completed_at = Some(at);
                    changed_tasks.insert(task.id);
                }
                due_changed.insert(id);
            }
            Effect::Communication {
                id: communication,
                channel,
                direction,
                summary,
            } => communications.push([
                communication.into(),
                id.into(),
                channel.into(),
                direction.into(),
                summary.into(),
                e.subject_id.as_uuid().into(),
                at.into(),
            ]),
            Effect::Erased => erased.push(id),
        }
    }
    for id in &due_changed {
        if let Some(lead) = leads.get_mut(id) {
            let open = tasks
                .values()
                .filter(|t| t.lead_id == *id && t.completed_at.is_none());
            set_next_due(&mut lead.row, open.map(|t| t.due_at));
        }
    }

    write_leads(tx, &leads).await?;
    write_tags(tx, &leads).await?;
    cache.keep(tx, &leads);
    notes.write(tx).await?;
    communications.write(tx).await?;
    assignments.write(tx).await?;
    let mut task_rows = Rows::new(
        "INSERT INTO lead_tasks (id, lead_id, title, due_at, completed_at, created_at)",
        6,
        "ON CONFLICT (id) DO UPDATE SET completed_at = excluded.completed_at",
    );
    for task in changed_tasks.iter().filter_map(|id| tasks.get(id)) {
        task_rows.push([
            task.id.into(),
            task.lead_id.into(),
            task.title.as_str().into(),
            task.due_at.into(),
            task.completed_at.into(),
            task.created_at.into(),
        ]);
    }
    task_rows.write(tx).await?;
    // An erased lead's texts go (the rows keep their dates and authors). Nothing
    // of the lead follows its erasure, so the batch's own rows are written by now.
    for lead in erased {
        for blank in [
            "UPDATE lead_notes SET body = '' WHERE lead_id = $1",
            "UPDATE lead_tasks SET title = '' WHERE lead_id = $1",
            "UPDATE lead_communications SET summary = '' WHERE lead_id = $1",
        ] {
            execute!(tx, blank, lead)?;
        }
    }
    Ok(())
}

/// What an event of a lead does besides changing its row.
pub(crate) enum Effect<'a> {
    Nothing,
    /// The lead was assigned to this user (on creation or by a reassignment).
    Assigned(Uuid),
    Note {
        id: Uuid,
        body: &'a str,
    },
    Task(TaskRow),
    TaskCompleted(Uuid),
    Communication {
        id: Uuid,
        channel: &'a str,
        direction: &'a str,
        summary: &'a str,
    },
    /// Its personal data was erased: its texts go too.
    Erased,
}

/// The row of the lead `decoded` creates, if it creates one (before
/// [`fold_row`] folds the same event into it).
pub(crate) fn created_row(decoded: &Decoded) -> Option<LeadRow> {
    let DomainEvent::LeadCreated(c) = &decoded.event else {
        return None;
    };
    let e = &decoded.recorded;
    let mut tags: Vec<String> = Vec::new();
    for tag in &c.tags {
        if !tags.contains(tag) {
            tags.push(tag.clone());
        }
    }
    Some(LeadRow {
        id: e.stream.id,
        site_id: e.site_id.as_uuid(),
        assigned_agent_id: c.assigned_agent_id.map(|a| a.as_uuid()),
        name: c.name.clone(),
        name_key: c.name.to_lowercase(),
        email: c.email.clone(),
        phone: c.phone.clone(),
        source: c.source.clone(),
        stage: c.stage.as_str().to_owned(),
        tags: json!(tags).to_string(),
        archived: false,
        erased: false,
        last_contacted_at: None,
        next_task_due_at: None,
        due_key: no_task_due(),
        created_at: e.recorded_at,
        updated_at: e.recorded_at,
        version: 0,
        position: e.position.0,
    })
}

/// Folds one event of a lead into its row: the one fold both the projection (which
/// writes the rows) and a past view (which keeps them in memory) run. Returns what
/// else the event does, for the caller to keep its way.
pub(crate) fn fold_row<'a>(row: &mut LeadRow, decoded: &'a Decoded) -> Effect<'a> {
    let e = &decoded.recorded;
    let at = e.recorded_at;
    let effect = match &decoded.event {
        DomainEvent::LeadCreated(c) => c
            .assigned_agent_id
            .map_or(Effect::Nothing, |agent| Effect::Assigned(agent.as_uuid())),
        DomainEvent::LeadFieldsUpdated(u) => {
            for change in &u.changes {
                let value = change.after.as_str().map(str::to_owned);
                match change.field.as_str() {
                    "name" => {
                        row.name = value.unwrap_or_default();
                        row.name_key = row.name.to_lowercase();
                    }
                    "email" => row.email = value,
                    "phone" => row.phone = value,
                    "source" => row.source = value,
                    _ => {}
                }
            }
            Effect::Nothing
        }
        DomainEvent::LeadStageChanged(s) => {
            row.stage = s.to.as_str().to_owned();
            Effect::Nothing
        }
        DomainEvent::LeadReassigned(r) => {
            row.assigned_agent_id = Some(r.to.as_uuid());
            Effect::Assigned(r.to.as_uuid())
        }
        DomainEvent::LeadTagAdded(t) => {
            let mut tags = tags_of(row);
            if !tags.contains(&t.tag) {
                tags.push(t.tag.clone());
            }
            row.tags = json!(tags).to_string();
            Effect::Nothing
        }
        DomainEvent::LeadTagRemoved(t) => {
            let mut tags = tags_of(row);
            tags.retain(|x| *x != t.tag);
            row.tags = json!(tags).to_string();
            Effect::Nothing
        }
        DomainEvent::LeadNoteAdded(n) => Effect::Note {
            id: n.note_id.as_uuid(),
            body: n.body.as_str(),
        },
        DomainEvent::LeadTaskCreated(t) => Effect::Task(TaskRow {
            id: t.task_id.as_uuid(),
            lead_id: e.stream.id,
            title: t.title.clone(),
            due_at: t.due_at,
            completed_at: None,
            created_at: at,
        }),
        DomainEvent::LeadTaskCompleted(t) => Effect::TaskCompleted(t.task_id.as_uuid()),
        DomainEvent::LeadCommunicationLogged(c) => {
            row.last_contacted_at = Some(at);
            Effect::Communication {
                id: c.communication_id.as_uuid(),
                channel: c.channel.as_str(),
                direction: c.direction.as_str(),
                summary: c.summary.as_str(),
            }
        }
        DomainEvent::LeadArchived(_) => {
            row.archived = true;
            Effect::Nothing
        }
        DomainEvent::LeadErased(_) => {
            erase_row(row);
            Effect::Erased
        }
        _ => Effect::Nothing,
    };
    row.updated_at = at;
    row.version = i64::try_from(e.stream_version).unwrap_or(i64::MAX);
    row.position = e.position.0;
    effect
}

/// Blanks a lead's personal data in its row.
pub(crate) fn erase_row(row: &mut LeadRow) {
    // Blanks, not NULLs: the columns hold text whenever a lead is not erased; the
    // flag says what they mean.
    row.name = String::new();
    row.name_key = String::new();
    row.email = None;
    row.phone = None;
    row.erased = true;
    // Nobody can work on it again: its open tasks are due for no one.
    row.next_task_due_at = None;
    row.due_key = no_task_due();
}

/// Sets a lead's next due date from the due dates of its open tasks (an erased
/// lead has none).
pub(crate) fn set_next_due(row: &mut LeadRow, open: impl Iterator<Item = DateTime<Utc>>) {
    if row.erased {
        return;
    }
    let next = open.min();
    row.next_task_due_at = next;
    row.due_key = next.unwrap_or_else(no_task_due);
}

/// The columns of `leads_view` a fold may change, in a fixed order.
const CHANGING: [&str; 16] = [
    "assigned_agent_id",
    "name",
    "name_key",
    "email",
    "phone",
    "source",
    "stage",
    "tags",
    "archived",
    "erased",
    "last_contacted_at",
    "next_task_due_at",
    "due_key",
    "updated_at",
    "version",
    "position",
];

/// A row's values of [`CHANGING`].
fn changing(row: &LeadRow) -> [Bind; 16] {
    [
        row.assigned_agent_id.into(),
        row.name.as_str().into(),
        row.name_key.as_str().into(),
        row.email.as_deref().into(),
        row.phone.as_deref().into(),
        row.source.as_deref().into(),
        row.stage.as_str().into(),
        row.tags.as_str().into(),
        row.archived.into(),
        row.erased.into(),
        row.last_contacted_at.into(),
        row.next_task_due_at.into(),
        row.due_key.into(),
        row.updated_at.into(),
        row.version.into(),
        row.position.into(),
    ]
}

/// Inserts the leads the batch created; updates the others, only in the columns
/// that changed (grouped by which columns, so each group is a few statements), so
/// that only the indexes holding those columns are rewritten.
async fn write_leads(tx: &mut Tx<'_>, leads: &BTreeMap<Uuid, Touched>) -> Result<(), StoreError> {
    let mut created = Rows::new(
        "INSERT INTO leads_view (id, site_id, created_at, assigned_agent_id, name, name_key, \
         email, phone, source, stage, tags, archived, erased, last_contacted_at, \
         next_task_due_at, due_key, updated_at, version, position)",
        19,
        "",
    );
    let mut updates: BTreeMap<Vec<usize>, Updates> = BTreeMap::new();
    for Touched { row, before, .. } in leads.values() {
        let after = changing(row);
        let Some(before) = before else {
            let fixed = [row.id.into(), row.site_id.into(), row.created_at.into()];
            created.push(fixed.into_iter().chain(after));
            continue;
        };
        let before = changing(before);
        let changed: Vec<usize> = (0..CHANGING.len())
            .filter(|i| before[*i] != after[*i])
            .collect();
        if changed.is_empty() {
            continue;
        }
        let values: Vec<Bind> = changed.iter().map(|i| after[*i].clone()).collect();
        updates
            .entry(changed.clone())
            .or_insert_with(|| {
                Updates::new(
                    "leads_view",
                    "id",
                    changed.iter().map(|i| CHANGING[*i]).collect(),
                )
            })
            .push(row.id.into(), values);
    }
    created.write(tx).await?;
    for update in updates.values() {
        update.write(tx).await?;
    }
    Ok(())
}

/// Brings `lead_tags` in line with each touched lead's tags.
async fn write_tags(tx: &mut Tx<'_>, leads: &BTreeMap<Uuid, Touched>) -> Result<(), StoreError> {
    let mut added = Rows::new(
        "INSERT INTO lead_tags (lead_id, tag)",
        2,
        "ON CONFLICT DO NOTHING",
    );
    for (id, lead) in leads {
        let before = lead.before.as_ref().map(tags_of).unwrap_or_default();
        let tags = tags_of(&lead.row);
        for tag in tags.iter().filter(|t| !before.contains(t)) {
            added.push([(*id).into(), tag.as_str().into()]);
        }
        for tag in before.iter().filter(|t| !tags.contains(t)) {
            execute!(
                tx,
                "DELETE FROM lead_tags WHERE lead_id = $1 AND tag = $2",
                *id,
                tag
            )?;
        }
    }
    added.write(tx).await
}

/// A lead as the Lead Manager shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lead {
    pub id: Uuid,
    #[serde(skip)]
    pub site_id: Uuid,
    /// `null` once the lead is erased, like its email and phone.
    pub name: Option<String>,
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
    /// Its personal data was erased.
    pub erased: bool,
    #[serde(skip)]
    pub archived: bool,
    #[serde(skip)]
    name_key: String,
    #[serde(skip)]
    due_key: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct LeadRow {
    pub(crate) id: Uuid,
    pub(crate) site_id: Uuid,
    pub(crate) assigned_agent_id: Option<Uuid>,
    pub(crate) name: String,
    pub(crate) name_key: String,
    pub(crate) email: Option<String>,
    pub(crate) phone: Option<String>,
    pub(crate) source: Option<String>,
    pub(crate) stage: String,
    pub(crate) tags: String,
    pub(crate) archived: bool,
    pub(crate) erased: bool,
    pub(crate) last_contacted_at: Option<DateTime<Utc>>,
    pub(crate) next_task_due_at: Option<DateTime<Utc>>,
    pub(crate) due_key: DateTime<Utc>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) version: i64,
    /// The position of the last event of the lead folded into the row.
    pub(crate) position: i64,
}

impl From<LeadRow> for Lead {
    fn from(r: LeadRow) -> Self {
        let tags = tags_of(&r);
        Lead {
            id: r.id,
            site_id: r.site_id,
            name: (!r.erased).then_some(r.name),
            email: r.email,
            phone: r.phone,
            source: r.source,
            stage: r.stage,
            tags,
            assigned_agent_id: r.assigned_agent_id,
            last_contacted_at: r.last_contacted_at,
            next_task_due_at: r.next_task_due_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
            version: r.version,
            erased: r.erased,
            archived: r.archived,
            name_key: r.name_key,
            due_key: r.due_key,
        }
    }
}

const LEAD_COLUMNS: &str = "SELECT id, site_id, assigned_agent_id, name, name_key, email, phone, source, stage, \
     tags, archived, erased, last_contacted_at, next_task_due_at, due_key, created_at, updated_at, version, position \
     FROM leads_view ";

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
        let key = match cursor_key(sort, cursor)? {
            CursorKey::Text(text, id) => (Bind::Text(text), id),
            CursorKey::Time(time, id) => (Bind::Time(time), id),
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
    Ok(paginate(leads, limit, cursor_of(sort)))
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
    /// `null` once the lead is erased.
    pub body: Option<String>,
    pub created_at: DateTime<Utc>,
    pub author_id: Uuid,
    /// The author's name (the account it was written in).
    pub author_name: Option<String>,
}

/// A task on a lead.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Task {
    pub id: Uuid,
    /// `null` once the lead is erased.
    pub title: Option<String>,
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
    /// `null` once the lead is erased.
    pub summary: Option<String>,
    pub created_at: DateTime<Utc>,
    pub author_id: Uuid,
    /// The author's name (the account it was logged in).
    pub author_name: Option<String>,
}

/// A lead's notes, oldest first.
///
/// # Errors
/// Store failures.
pub async fn notes(db: &Database, lead: LeadId) -> Result<Vec<Note>, QueryError> {
    Ok(on_pool!(db, |pool| {
        sqlx::query_as(
            "SELECT id, NULLIF(body, '') AS body, created_at, author_id, \
         (SELECT name FROM users_view WHERE users_view.id = lead_notes.author_id) AS author_name \
         FROM lead_notes WHERE lead_id = $1 ORDER BY created_at, id",
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
            "SELECT id, NULLIF(title, '') AS title, due_at, completed_at FROM lead_tasks \
         WHERE lead_id = $1 ORDER BY due_at, id",
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
        "SELECT id, channel, direction, NULLIF(summary, '') AS summary, created_at, author_id, \
         (SELECT name FROM users_view WHERE users_view.id = lead_communications.author_id) \
         AS author_name FROM lead_communications WHERE lead_id = $1 ORDER BY created_at, id"
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
        "SELECT id, NULLIF(title, '') AS title, due_at, completed_at FROM lead_tasks WHERE id = $1"
    )
    .bind(id.as_uuid())
    .fetch_optional(pool)
    .await?))
}

/// The cursor of a page as the list query reads it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CursorKey {
    Text(String, Uuid),
    Time(DateTime<Utc>, Uuid),
}

impl CursorKey {
    /// Whether `row` comes after the cursor in `sort`'s order (on the next page).
    pub(crate) fn is_before(&self, sort: LeadSort, row: &LeadRow) -> bool {
        let order = match (self, sort) {
            (Self::Text(name, id), _) => (&row.name_key, row.id).cmp(&(name, *id)),
            (Self::Time(time, id), LeadSort::NextTaskDueAt) => {
                (row.due_key, row.id).cmp(&(*time, *id))
            }
            (Self::Time(time, id), _) => (row.updated_at, row.id).cmp(&(*time, *id)),
        };
        if sort == LeadSort::UpdatedAtDesc {
            order == Ordering::Less
        } else {
            order == Ordering::Greater
        }
    }
}

/// The cursor `cursor` of a page in `sort`'s order.
///
/// # Errors
/// [`QueryError::BadCursor`].
pub(crate) fn cursor_key(sort: LeadSort, cursor: &str) -> Result<CursorKey, QueryError> {
    match sort {
        LeadSort::Name => decode_cursor(cursor, |k| {
            Some(CursorKey::Text(text_at(k, 0)?, uuid_at(k, 1)?))
        }),
        _ => decode_cursor(cursor, |k| {
            Some(CursorKey::Time(time_at(k, 0)?, uuid_at(k, 1)?))
        }),
    }
}

/// The cursor of the page after `lead`, in `sort`'s order.
pub(crate) fn cursor_of(sort: LeadSort) -> impl Fn(&Lead) -> serde_json::Value {
    move |l| match sort {
        LeadSort::Name => json!([l.name_key, l.id]),
        LeadSort::NextTaskDueAt => json!([l.due_key, l.id]),
        LeadSort::UpdatedAt | LeadSort::UpdatedAtDesc => json!([l.updated_at, l.id]),
    }
}
