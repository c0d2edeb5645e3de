//! Reverting an ended "Log in as user" session: its changes are read back from the
//! log, planned against the states as they are now (`domain::revert`), and, unless
//! it is a dry run, put back in one append with a summary of the decision.

use std::collections::BTreeSet;

use crm_events::catalog::impersonation::ImpersonationReverted;
use crm_events::ids::{ImpersonationId, LeadId, UserId};
use crm_events::{DomainEvent, ExpectedVersion, Position, StoreError, StreamAppend};
use crm_projections::audit_trail;

use super::aggregates::{
    impersonation_stream, lead_stream, load_impersonation, load_lead, load_settings,
    settings_stream,
};
use super::{sessions, App, AppError, RequestContext};
use crate::domain::policy::{authorize, Action};
use crate::domain::revert::{self, Action as Step, Desk, Item, Made};
use crate::domain::values::Reason;

/// What a revert did, or would do (a dry run).
#[derive(Debug, Clone, PartialEq)]
pub struct Reverted {
    /// Every change of the session, newest first, with what the revert does with it.
    pub plan: Vec<Item>,
    /// The position of the revert's last event; `None` for a dry run.
    pub position: Option<i64>,
}

impl App {
    /// Reverts what impersonation `id` changed, newest first: a change nothing has
    /// changed since is put back (as the caller, on the agent's account, caused by
    /// the session), one changed since is left alone, one the domain cannot undo is
    /// said so. A dry run appends nothing.
    ///
    /// # Errors
    /// [`AppError::Forbidden`] / [`AppError::ImpersonationForbidden`] for a caller
    /// who may not; [`AppError::NotFound`] for a session not of the caller's site;
    /// [`AppError::Conflict`] while the session runs, or when what it changed moved
    /// while the revert was planned (plan again).
    pub async fn revert_session(
        &self,
        ctx: &RequestContext,
        id: ImpersonationId,
        reason: Reason,
        dry_run: bool,
    ) -> Result<Reverted, AppError> {
        authorize(&ctx.caller, Action::RevertSessions)?;
        let db = self.settled(&[crm_projections::audit_trail::NAME]).await?;
        let session = audit_trail::session(db, ctx.site(), id)
            .await?
            .ok_or(AppError::NotFound("impersonation"))?;
        if session.ended_at.is_none() {
            return Err(AppError::Conflict(
                "the session is still running: only an ended session can be reverted".into(),
            ));
        }
        // Once only: a second revert would take what the agent did since the first
        // for the session's doing. Its append expects the version read here, so of
        // two reverts at once one stands.
        let stream = load_impersonation(&self.store, id).await?;
        if stream.state.reverted {
            return Err(AppError::Conflict(
                "this session was reverted already; anything more is a new change, made by hand"
                    .into(),
            ));
        }
        let agent = UserId::from_uuid(session.subject_id);
        // The session's events, oldest first (its views change nothing).
        let positions: BTreeSet<i64> = audit_trail::session_changes(db, id)
            .await?
            .into_iter()
            .filter(|c| c.kind == "change")
            .map(|c| c.position)
            .collect();
        let mut made = Vec::with_capacity(positions.len());
        for position in positions {
            let read = self.store.read_all(Position(position - 1), 1).await?;
            let Some(recorded) = read.into_iter().find(|e| e.position.0 == position) else {
                continue;
            };
            let event = DomainEvent::decode(&recorded).map_err(AppError::Store)?;
            made.push(Made {
                position,
                stream_id: recorded.stream.id,
                event,
            });
        }
        // The states they touched, as they are now, with their versions.
        let settings = load_settings(&self.store, agent).await?;
        let mut desk = Desk {
            settings: settings.state,
            ..Desk::default()
        };
        let mut versions = Vec::new();
        for m in &made {
            if m.event.stream_type() != crm_events::StreamType::Lead {
                continue;
            }
            let lead = LeadId::from_uuid(m.stream_id);
            if desk.leads.contains_key(&lead) {
                continue;
            }
            let loaded = load_lead(&self.store, lead).await?;
            versions.push((lead, loaded.version));
            desk.leads.insert(lead, loaded.state);
        }
        let (plan, undo) = revert::plan(&made, &mut desk);
        if dry_run {
            return Ok(Reverted {
                plan,
                position: None,
            });
        }
        let count = |step: Step| {
            u32::try_from(plan.iter().filter(|i| i.action == step).count()).unwrap_or(u32::MAX)
        };
        let summary: DomainEvent = ImpersonationReverted {
            reason: reason.into_inner(),
            reverted: count(Step::Revert),
            conflicts: count(Step::Conflict),
            not_revertible: count(Step::NotRevertible),
        }
        .into();
        let as_new =
            |events: &[DomainEvent]| events.iter().map(DomainEvent::to_new_event).collect();
        let mut appends = Vec::new();
        for (lead, version) in versions {
            let events = undo.leads.get(&lead).map(Vec::as_slice).unwrap_or_default();
            if !events.is_empty() {
                appends.push(StreamAppend {
                    site_id: ctx.site(),
                    stream: lead_stream(lead),
                    expected: ExpectedVersion::Exact(version),
                    events: as_new(events),
                });
            }
        }
        if !undo.settings.is_empty() {
            appends.push(StreamAppend {
                site_id: ctx.site(),
                stream: settings_stream(agent),
                expected: ExpectedVersion::Exact(settings.version),
                events: as_new(&undo.settings),
            });
        }
        appends.push(StreamAppend {
            site_id: ctx.site(),
            stream: impersonation_stream(id),
            expected: ExpectedVersion::Exact(stream.version),
            events: vec![summary.to_new_event()],
        });
        // As the caller, on the agent's account, caused by the session; a key sent
        // with it is reserved in the same transaction (a retry finds the revert done).
        let mut meta = ctx.as_actor().metadata();
        meta.subject_id = agent;
        meta.causation_id = Some(id.as_uuid());
        let side = sessions::key_reserved(ctx, self.clock.now(), None)
            .into_iter()
            .collect();
        let outcome =
            self.store
                .append_with(appends, meta, side)
                .await
                .map_err(|error| match error {
                    StoreError::Conflict { .. } => AppError::Conflict(
                        "what the session changed moved while the revert was planned: plan again"
                            .into(),
                    ),
                    other => other.into(),
                })?;
        for lead in undo.leads.keys() {
            self.caches.leads.forget(&lead_stream(*lead));
        }
        Ok(Reverted {
            plan,
            position: Some(outcome.last_position.0),
        })
    }
}
