//! "Log in as user" and "Return to Admin".

use crm_events::catalog::values::{EndReason, ImpersonationMode};
use crm_events::ids::{CorrelationId, ImpersonationId, UserId};
use crm_events::{DomainEvent, ExpectedVersion, StoreError};

use crm_projections::audit_trail::{self, SessionFilter};

use super::aggregates::impersonation_stream;
use super::sessions::{self, Holding};
use super::{App, AppError, RequestContext, Written};
use crate::domain::impersonation;
use crate::domain::policy::{may_impersonate, Caller};
use crate::domain::values::Reason;

impl App {
    /// The caller (an owner or admin) starts acting as the agent `target`, in `mode`
    /// (`view`: every write refused). Returns the context the session's next requests
    /// will have.
    ///
    /// # Errors
    /// [`AppError::Conflict`] when already impersonating; [`AppError::NotFound`] for
    /// an unknown user; [`AppError::Forbidden`] for a disallowed caller or target, or
    /// when the site has it switched off; [`AppError::Validation`] when the site
    /// requires a reason and there is none.
    pub async fn start_impersonation(
        &self,
        ctx: &RequestContext,
        target: UserId,
        reason: Option<Reason>,
        mode: ImpersonationMode,
    ) -> Result<(RequestContext, Written), AppError> {
        if ctx.caller.is_impersonating() {
            return Err(AppError::Conflict(
                "already logged in as another user: return to admin first".into(),
            ));
        }
        let target = self.load_user(target).await?.state;
        let rules = self.load_site(ctx.site()).await?.state.rules;
        may_impersonate(&ctx.caller, &target.view(), &rules, reason.is_some())?;

        let id = ImpersonationId::from_uuid(ctx.new_id("impersonation"));
        let acting = RequestContext {
            caller: Caller {
                actor: ctx.caller.actor,
                subject: target.view(),
                impersonation: Some(id),
                view_only: mode == ImpersonationMode::View,
            },
            ..ctx.clone()
        };
        let events = impersonation::start(
            ctx.actor(),
            target.id,
            reason,
            mode,
            self.clock.now(),
            rules.max_minutes,
        );
        let expires_at = match events.first() {
            Some(DomainEvent::ImpersonationStarted(started)) => started.expires_at,
            _ => self.clock.now(),
        };
        // The session takes it up in the same transaction, and only if it holds
        // none: two starts at once cannot both win.
        let held = sessions::impersonation_held(&ctx.session, id, target.id, expires_at);
        let written = self
            .record_with(
                &acting,
                impersonation_stream(id),
                ExpectedVersion::NoStream,
                events,
                vec![held],
            )
            .await
            .map_err(|error| match error {
                AppError::Store(StoreError::SideWriteRefused { .. }) => AppError::Conflict(
                    "already logged in as another user: return to admin first".into(),
                ),
                other => other,
            })?;
        Ok((acting, written))
    }

    /// "Return to Admin": ends the impersonation; the session acts as the admin again.
    ///
    /// # Errors
    /// [`AppError::Conflict`] when not impersonating.
    pub async fn return_to_admin(
        &self,
        ctx: &RequestContext,
    ) -> Result<(RequestContext, Written), AppError> {
        let Some(id) = ctx.impersonation() else {
            return Err(AppError::Conflict("not logged in as another user".into()));
        };
        // Ended meanwhile by another request (a second Return to Admin, a
        // sign-out, the expiry): the admin is back all the same, which is what
        // was asked ("Return to Admin" always works while the session is valid).
        let written = match self
            .end_impersonation_of(ctx, id, ctx.subject(), EndReason::Returned)
            .await?
        {
            Some(written) => written,
            None => Written {
                position: self.store.head().await?,
                version: self.load_impersonation(id).await?.version,
            },
        };
        Ok((ctx.as_actor(), written))
    }

    /// Records the end of impersonation `id` (as the admin, about the subject);
    /// the session holding it lets go of it in the same transaction. Ending an
    /// already ended session records nothing (`None`); if another request or
    /// server ends it first, that one's end stands (`None` too).
    pub(crate) async fn end_impersonation_of(
        &self,
        admin_ctx: &RequestContext,
        id: ImpersonationId,
        subject: UserId,
        reason: EndReason,
    ) -> Result<Option<Written>, AppError> {
        let session = self.load_impersonation(id).await?;
        let events = impersonation::end(&session.state, reason, self.clock.now());
        if events.is_empty() {
            // Ended already: only a session written before ends and releases
            // were one transaction can still point at it.
            sessions::release_ended(self.store.database(), id).await?;
            return Ok(None);
        }
        let mut about_subject = admin_ctx.as_actor();
        about_subject.caller.subject.id = subject;
        about_subject.caller.impersonation = Some(id);
        let recorded = self
            .record_with(
                &about_subject,
                impersonation_stream(id),
                ExpectedVersion::Exact(session.version),
                events,
                vec![sessions::impersonation_released(id)],
            )
            .await;
        match recorded {
            // Another request or server ended it first: it is ended either way.
            Err(AppError::Conflict(_)) => Ok(None),
            other => other.map(Some),
        }
    }

    /// Records every impersonation end that is due, on every site: expired ones
    /// (at their expiry), those held by a session that ended or expired, and
    /// those the policy no longer allows (revoked). With several servers each may
    /// find the same one; the impersonation stream's version lets exactly one
    /// record it.
    ///
    /// # Errors
    /// Store failures.
    pub async fn record_due_endings(&self) -> Result<(), AppError> {
        let held = sessions::holding(self.store.database(), Holding::Anywhere).await?;
        self.end_impersonations_due(&held, CorrelationId::generate())
            .await
    }

    /// Runs [`App::record_due_endings`] every `interval` until the returned task
    /// is aborted or the store closes: an impersonation's end is recorded when it
    /// happens, whether or not anyone makes a request.
    #[must_use]
    pub fn watch_endings(&self, interval: std::time::Duration) -> tokio::task::JoinHandle<()> {
        super::every(
            self,
            interval,
            "could not record the impersonations that ended",
            |app| async move { app.record_due_endings().await },
        )
    }

    /// Checks what a request says it acts as (`Acting-As`): the subject it acts
    /// as now. A session that was logged in as `claimed` and no longer is gets
    /// how and when that ended; one that never was (or is logged in as someone
    /// else) a conflict. Either way the request changes nothing.
    ///
    /// # Errors
    /// [`AppError::ImpersonationEnded`], [`AppError::Conflict`].
    pub async fn check_acting_as(
        &self,
        ctx: &RequestContext,
        claimed: UserId,
    ) -> Result<(), AppError> {
        if ctx.subject() == claimed {
            return Ok(());
        }
        let session = sessions::find_session(self.store.database(), &ctx.session).await?;
        let Some(last) = session.and_then(|s| s.last_impersonation_id) else {
            return Err(not_acting_as());
        };
        // The session's last impersonation; or, when it was of someone else, the
        // latest of this admin's as `claimed` (the audit trail knows them all).
        let mut ended = self
            .load_impersonation(ImpersonationId::from_uuid(last))
            .await?
            .state;
        if ended.subject_id != claimed {
            self.settle_for(&[crm_projections::audit_trail::NAME])
                .await?;
            let filter = SessionFilter {
                admin_id: Some(ctx.actor()),
                subject_id: Some(claimed),
                ..SessionFilter::default()
            };
            let page =
                audit_trail::sessions(self.store.database(), ctx.site(), &filter, None, 1).await?;
            let Some(latest) = page.items.first() else {
                return Err(not_acting_as());
            };
            ended = self
                .load_impersonation(ImpersonationId::from_uuid(latest.id))
                .await?
                .state;
        }
        if let Some((end_reason, ended_at)) = ended.ended {
            return Err(AppError::ImpersonationEnded {
                end_reason,
                ended_at,
            });
        }
        Err(not_acting_as())
    }
}

/// A request that says it acts as a user the session never logged in as (or
/// does not act as now).
fn not_acting_as() -> AppError {
    AppError::Conflict(
        "this request is not acting as that user (Acting-As): reload to see whose account \
         the session acts as"
            .into(),
    )
}
