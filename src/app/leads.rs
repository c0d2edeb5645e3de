//! The Lead Manager's commands. They act as the subject: while impersonating, an
//! admin works exactly the agent's leads, and every event records both.

use crm_events::catalog::values::{Channel, Direction};
use crm_events::ids::{CommunicationId, LeadId, NoteId, TaskId, UserId};
use crm_events::{DomainEvent, ExpectedVersion, SideWrite};

use super::aggregates::{lead_stream, Loaded};
use super::{expect, retry_lost_races, App, AppError, RequestContext, Written};
use crate::domain::lead::{self, Lead, LeadEdit, NewLead};
use crate::domain::policy::{authorize, can_see_lead, Action};
use crate::domain::values::{DueAt, NoteBody, Reason, Summary, TaskTitle};

impl App {
    /// A lead the subject may see. Others' leads and archived ones are "not found",
    /// never "forbidden": their existence is not leaked.
    ///
    /// # Errors
    /// [`AppError::NotFound`].
    pub async fn lead(&self, ctx: &RequestContext, id: LeadId) -> Result<Loaded<Lead>, AppError> {
        authorize(&ctx.caller, Action::WorkOwnLeads)?;
        let loaded = match self.load_lead(id).await {
            Ok(loaded) => loaded,
            Err(AppError::NotFound(_)) => return Err(AppError::NotFound("lead")),
            Err(other) => return Err(other),
        };
        visible(ctx, &loaded)?;
        Ok(loaded)
    }

    /// Creates a lead. Agents' leads are theirs; owners and admins may assign a new
    /// lead to any active agent (or admin) of the site.
    ///
    /// # Errors
    /// [`AppError::Forbidden`] for an auditor, or an agent naming another assignee;
    /// [`AppError::Validation`] for an assignee who is not an active user of the site.
    pub async fn create_lead(
        &self,
        ctx: &RequestContext,
        mut new: NewLead,
    ) -> Result<(LeadId, Written), AppError> {
        authorize(&ctx.caller, Action::WorkOwnLeads)?;
        let subject = ctx.subject();
        match new.assigned_agent_id {
            None => new.assigned_agent_id = Some(subject),
            Some(other) if other != subject => {
                authorize(&ctx.caller, Action::WorkAllLeads)?;
                self.check_assignee(ctx, other).await?;
            }
            Some(_) => {}
        }
        let id = LeadId::from_uuid(ctx.new_id("lead"));
        let written = self
            .record(
                ctx,
                lead_stream(id),
                ExpectedVersion::NoStream,
                lead::create(new),
            )
            .await?;
        Ok((id, written))
    }

    async fn check_assignee(&self, ctx: &RequestContext, agent: UserId) -> Result<(), AppError> {
        let assignee = match self.load_user(agent).await {
            Ok(user) => user.state,
            Err(AppError::NotFound(_)) => {
                return Err(AppError::invalid("agent_id", "no such user"))
            }
            Err(other) => return Err(other),
        };
        if assignee.site_id != ctx.site() {
            return Err(AppError::invalid("agent_id", "no such user"));
        }
        if !assignee.active || assignee.role == crm_events::catalog::values::Role::Auditor {
            return Err(AppError::invalid(
                "agent_id",
                "leads can be assigned to active agents, admins and owners only",
            ));
        }
        Ok(())
    }

    /// Edits a lead's contact fields, stage and tags.
    ///
    /// # Errors
    /// [`AppError::NotFound`]; [`AppError::Conflict`] for a stale `if_match`.
    pub async fn edit_lead(
        &self,
        ctx: &RequestContext,
        id: LeadId,
        edit: LeadEdit,
        if_match: Option<u64>,
    ) -> Result<Written, AppError> {
        self.on_lead(ctx, id, if_match, |lead| lead::edit(lead, edit.clone()))
            .await
    }

    /// Assigns a lead to another agent (owners and admins).
    ///
    /// # Errors
    /// [`AppError::Forbidden`] for agents; as [`App::edit_lead`].
    pub async fn assign_lead(
        &self,
        ctx: &RequestContext,
        id: LeadId,
        agent: UserId,
        if_match: Option<u64>,
    ) -> Result<Written, AppError> {
        authorize(&ctx.caller, Action::WorkAllLeads)?;
        self.check_assignee(ctx, agent).await?;
        self.on_lead(ctx, id, if_match, |lead| lead::assign(lead, agent))
            .await
    }

    /// Adds a note; returns its id.
    ///
    /// # Errors
    /// As [`App::edit_lead`].
    pub async fn add_note(
        &self,
        ctx: &RequestContext,
        id: LeadId,
        body: NoteBody,
    ) -> Result<(NoteId, Written), AppError> {
        let note = NoteId::from_uuid(ctx.new_id("note"));
        let written = self
            .on_lead(ctx, id, None, |lead| {
                lead::add_note(lead, note, body.clone())
            })
            .await?;
        Ok((note, written))
    }

    /// Creates a task; returns its id.
    ///
    /// # Errors
    /// As [`App::edit_lead`].
    pub async fn create_task(
        &self,
        ctx: &RequestContext,
        id: LeadId,
        title: TaskTitle,
        due_at: DueAt,
    ) -> Result<(TaskId, Written), AppError> {
        let task = TaskId::from_uuid(ctx.new_id("task"));
        let written = self
            .on_lead(ctx, id, None, |lead| {
                lead::create_task(lead, task, title.clone(), due_at)
            })
            .await?;
        Ok((task, written))
    }

    /// Completes a task.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for an unknown task; as [`App::edit_lead`].
    pub async fn complete_task(
        &self,
        ctx: &RequestContext,
        id: LeadId,
        task: TaskId,
    ) -> Result<Written, AppError> {
        self.on_lead(ctx, id, None, |lead| lead::complete_task(lead, task))
            .await
    }

    /// Logs a call, email or text; returns its id.
    ///
    /// # Errors
    /// As [`App::edit_lead`].
    pub async fn log_communication(
        &self,
        ctx: &RequestContext,
        id: LeadId,
        channel: Channel,
        direction: Direction,
        summary: Summary,
    ) -> Result<(CommunicationId, Written), AppError> {
        let communication = CommunicationId::from_uuid(ctx.new_id("communication"));
        let written = self
            .on_lead(ctx, id, None, |lead| {
                lead::log_communication(lead, communication, channel, direction, summary.clone())
            })
            .await?;
        Ok((communication, written))
    }

    /// Erases a lead's personal data, archived or not (owners and admins, never
    /// while logged in as someone, with a reason): appends `LeadErased`, and the
    /// store destroys the lead's key in the same transaction, so its personal
    /// values read as erased everywhere from then on. Answers once the Lead
    /// Manager and the audit trail show it; erasing it again appends nothing
    /// and answers the first erasure.
    ///
    /// # Errors
    /// [`AppError::Forbidden`], [`AppError::ImpersonationForbidden`];
    /// [`AppError::NotFound`] for a lead of another site or none.
    pub async fn erase_lead(
        &self,
        ctx: &RequestContext,
        id: LeadId,
        reason: Reason,
    ) -> Result<Erasure, AppError> {
        authorize(&ctx.caller, Action::EraseLeads)?;
        let written = retry_lost_races(None, || async {
            let loaded = match self.load_lead(id).await {
                Ok(loaded) => loaded,
                Err(AppError::NotFound(_)) => return Err(AppError::NotFound("lead")),
                Err(other) => return Err(other),
            };
            if !can_see_lead(&ctx.caller.subject, loaded.state.site_id, None) {
                return Err(AppError::NotFound("lead"));
            }
            let events = lead::erase(&loaded.state, reason.clone());
            // The answers kept for retries about the lead hold its personal data.
            let kept = SideWrite::any(
                "kept answers",
                "DELETE FROM http_idempotency WHERE lead_id = $1",
                vec![id.as_uuid().into()],
            );
            self.record_with(
                ctx,
                lead_stream(id),
                ExpectedVersion::Exact(loaded.version),
                events,
                vec![kept],
            )
            .await
        })
        .await?;
        self.caches.leads.forget(&lead_stream(id));
        // The erasure is the stream's last event (nothing is recorded after it),
        // and the version written, or found, is the stream's.
        let erasure = self
            .store
            .read_stream(lead_stream(id), written.version.saturating_sub(1))
            .await?
            .pop()
            .filter(|e| e.event_type == "LeadErased")
            .ok_or(AppError::NotFound("lead"))?;
        self.settle_for(&[
            crm_projections::lead_manager::NAME,
            crm_projections::audit_trail::NAME,
        ])
        .await?;
        // SQLite keeps the pages as they were in the database file until its
        // write-ahead log is checkpointed: as far as it goes without waiting for
        // anyone (emptying the log waits for every reader and holds the writers
        // meanwhile, which is `crm lead erase`'s, like PostgreSQL's rewrite).
        if let Err(error) = self.store.checkpoint().await {
            tracing::warn!(%error, lead = %id, "the write-ahead log was not checkpointed");
        }
        Ok(Erasure {
            id,
            erased_at: erasure.recorded_at,
            position: erasure.position,
        })
    }

    /// Cleans the tables an erasure wrote (see [`crm_events::EventStore::scrub`]):
    /// the lead keys, the Lead Manager's and the audit trail's. Answers what was
    /// done.
    ///
    /// # Errors
    /// Store failures.
    pub async fn scrub_erased(&self) -> Result<String, AppError> {
        let touched = [
            crm_projections::lead_manager::NAME,
            crm_projections::audit_trail::NAME,
        ];
        // The lead keys, and the records that recognise retries (they hold
        // hashes of requests and appends, personal values included).
        let mut tables = vec!["lead_keys", "idempotency_keys", "http_idempotency"];
        for projection in crm_projections::all() {
            if touched.contains(&projection.name()) {
                tables.extend(projection.tables());
            }
        }
        Ok(self.store.scrub(&tables).await?)
    }

    /// Archives a lead.
    ///
    /// # Errors
    /// As [`App::edit_lead`].
    pub async fn archive_lead(
        &self,
        ctx: &RequestContext,
        id: LeadId,
        if_match: Option<u64>,
    ) -> Result<Written, AppError> {
        self.on_lead(ctx, id, if_match, lead::archive).await
    }

    /// Loads a visible lead, decides, appends; without `If-Match`, retries a few
    /// times if another write to the lead came in between.
    ///
    /// The first try decides on the lead as this process last saw it, without reading
    /// the store: the append's expected version confirms that nothing changed since.
    /// A refusal or a conflict on that copy is decided again on the lead read fresh,
    /// and so is a change that changes nothing on it (nothing would be appended to
    /// confirm it), so a stale copy never answers. A store failure is answered as it is: it may
    /// come after the append, and deciding again could append twice.
    async fn on_lead<F>(
        &self,
        ctx: &RequestContext,
        id: LeadId,
        if_match: Option<u64>,
        decide: F,
    ) -> Result<Written, AppError>
    where
        F: Fn(&Lead) -> Result<Vec<DomainEvent>, lead::LeadRejection>,
    {
        if let Some(cached) = self.caches.leads.cached(&lead_stream(id)) {
            authorize(&ctx.caller, Action::WorkOwnLeads)?;
            // A change that changes nothing appends nothing, and so nothing would
            // confirm the copy: only a change is decided on it.
            let changes = decide(&cached.state).is_ok_and(|events| !events.is_empty());
            if changes && visible(ctx, &cached).is_ok() {
                match self
                    .decide_on_lead(ctx, id, cached, if_match, &decide)
                    .await
                {
                    Err(AppError::Store(error)) => return Err(AppError::Store(error)),
                    Ok(written) => return Ok(written),
                    Err(_refused_on_a_copy_that_may_be_stale) => {}
                }
            }
        }
        retry_lost_races(if_match, || async {
            let lead = self.lead(ctx, id).await?;
            self.decide_on_lead(ctx, id, lead, if_match, &decide).await
        })
        .await
    }

    /// Decides on `lead` (one the caller may see) and appends with its version
    /// expected; keeps the lead as it is after the append for the next command.
    async fn decide_on_lead<F>(
        &self,
        ctx: &RequestContext,
        id: LeadId,
        lead: Loaded<Lead>,
        if_match: Option<u64>,
        decide: &F,
    ) -> Result<Written, AppError>
    where
        F: Fn(&Lead) -> Result<Vec<DomainEvent>, lead::LeadRejection>,
    {
        // An erased lead is gone whatever version the client holds.
        if lead.state.erased {
            return Err(AppError::Gone("lead"));
        }
        let expected = expect(if_match, lead.version)?;
        let events = decide(&lead.state)?;
        let written = self
            .record(ctx, lead_stream(id), expected, events.clone())
            .await?;
        let mut state = lead.state;
        for event in &events {
            state.apply(event);
        }
        self.caches.leads.keep(
            lead_stream(id),
            Loaded {
                state,
                version: written.version,
            },
        );
        Ok(written)
    }
}

/// Others' leads and archived ones are "not found", never "forbidden".
fn visible(ctx: &RequestContext, loaded: &Loaded<Lead>) -> Result<(), AppError> {
    let visible = can_see_lead(
        &ctx.caller.subject,
        loaded.state.site_id,
        loaded.state.assigned_agent_id,
    );
    if !visible || loaded.state.archived {
        return Err(AppError::NotFound("lead"));
    }
    Ok(())
}

/// What an erasure answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erasure {
    pub id: LeadId,
    pub erased_at: chrono::DateTime<chrono::Utc>,
    pub position: crm_events::Position,
}
