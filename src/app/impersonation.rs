//! "Log in as user" and "Return to Admin".

use crm_events::catalog::values::EndReason;
use crm_events::ids::{ImpersonationId, UserId};
use crm_events::ExpectedVersion;

use super::aggregates::impersonation_stream;
use super::sessions;
use super::{App, AppError, RequestContext, Written};
use crate::domain::impersonation;
use crate::domain::policy::{may_impersonate, Caller};
use crate::domain::values::Reason;

impl App {
    /// The caller (an owner or admin) starts acting as the agent `target`. Returns
    /// the context the session's next requests will have.
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
        let db = self.store.database();
        if !sessions::set_impersonation(db, &ctx.session, Some((id, target.id))).await? {
            return Err(AppError::Conflict(
                "already logged in as another user: return to admin first".into(),
            ));
        }
        let acting = RequestContext {
            caller: Caller {
                actor: ctx.caller.actor,
                subject: target.view(),
                impersonation: Some(id),
            },
            ..ctx.clone()
        };
        let events = impersonation::start(
            ctx.actor(),
            target.id,
            reason,
            self.clock.now(),
            rules.max_minutes,
        );
        match self
            .record(
                &acting,
                impersonation_stream(id),
                ExpectedVersion::NoStream,
                events,
            )
            .await
        {
            Ok(written) => Ok((acting, written)),
            Err(error) => {
                sessions::set_impersonation(db, &ctx.session, None).await?;
                Err(error)
            }
        }
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
        let written = self
            .end_impersonation_of(ctx, id, ctx.subject(), EndReason::Returned)
            .await?;
        Ok((ctx.as_actor(), written))
    }

    /// Records the end of impersonation `id` (as the admin, about the subject) and
    /// takes the admin's session out of it. Ending an already ended session records
    /// nothing.
    pub(crate) async fn end_impersonation_of(
        &self,
        admin_ctx: &RequestContext,
        id: ImpersonationId,
        subject: UserId,
        reason: EndReason,
    ) -> Result<Written, AppError> {
        let session = self.load_impersonation(id).await?;
        let events = impersonation::end(&session.state, reason, self.clock.now());
        let mut about_subject = admin_ctx.as_actor();
        about_subject.caller.subject.id = subject;
        about_subject.caller.impersonation = Some(id);
        let recorded = self
            .record(
                &about_subject,
                impersonation_stream(id),
                ExpectedVersion::Exact(session.version),
                events,
            )
            .await;
        let written = match recorded {
            Ok(written) => written,
            // Another request ended it first: it is ended either way.
            Err(AppError::Conflict(_)) => Written {
                position: self.projector.projected(),
                version: session.version + 1,
            },
            Err(other) => return Err(other),
        };
        sessions::set_impersonation(self.store.database(), &admin_ctx.session, None).await?;
        Ok(written)
    }
}
