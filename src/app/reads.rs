//! What the web frontends read: the projections, through the same policy as the
//! commands. Every read is scoped to the caller's site; agents see only their own.

use std::collections::BTreeMap;

use crm_events::catalog::impersonation::LeadViewed;
use crm_events::catalog::values::Role;
use crm_events::ids::{CommunicationId, LeadId, NoteId, SiteId, TaskId, TemplateId, UserId};
use crm_events::ExpectedVersion;
use crm_projections::audit_trail::{self, ImpersonationSession};
use crm_projections::lead_manager::{
    self, Communication, Lead, LeadFilter, LeadSort, Note, Owner, Task,
};
use crm_projections::settings::{self as settings_view, Template};
use crm_projections::users::{self, SiteRow, UserRow};
use crm_projections::{notifications, Page};
use serde::Serialize;
use serde_json::Value;

use super::aggregates::views_stream;
use super::{App, AppError, RequestContext};
use crate::domain::policy::{
    authorize, can_see_lead, may_impersonate, Action, ImpersonationRules, UserView,
};
use crate::domain::settings::SettingKey;

/// A row of the users list, with whether the caller may log in as that user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListedUser {
    #[serde(flatten)]
    pub user: UserRow,
    pub can_impersonate: bool,
    /// Why not, when not.
    pub cannot_impersonate_because: Option<String>,
}

/// Who is signed in: the user acted as, the human acting, and the "Log in as
/// user" session they are in, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me {
    pub user: UserRow,
    pub actor: UserRow,
    pub impersonation: Option<ImpersonationSession>,
}

/// What the Lead Manager lists.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeadQuery {
    pub stage: Option<crm_events::catalog::values::Stage>,
    pub tag: Option<String>,
    pub q: Option<String>,
    pub sort: LeadSort,
    /// Every lead of the site (owners and admins), not only the subject's.
    pub whole_site: bool,
}

/// A page of leads with the counts per stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LeadPage {
    pub items: Vec<Lead>,
    pub counts_by_stage: BTreeMap<String, i64>,
    pub next_cursor: Option<String>,
}

/// A lead with its notes, tasks and communications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LeadDetail {
    #[serde(flatten)]
    pub lead: Lead,
    pub notes: Vec<Note>,
    pub tasks: Vec<Task>,
    pub communications: Vec<Communication>,
}

fn rules_of(site: &SiteRow) -> ImpersonationRules {
    ImpersonationRules {
        enabled: site.impersonation_enabled,
        max_minutes: u32::try_from(site.impersonation_max_minutes).unwrap_or(0),
        reason_required: site.impersonation_reason_required,
        notify_subject: site.notify_subject_on_impersonation,
    }
}

pub(crate) fn view_of(user: &UserRow) -> UserView {
    UserView {
        id: UserId::from_uuid(user.id),
        site_id: SiteId::from_uuid(user.site_id),
        role: Role::parse(&user.role).unwrap_or(Role::Auditor),
        active: user.active,
    }
}

/// Every settings key with its value: the one stored, or its default.
pub(crate) fn with_defaults(
    stored: &serde_json::Map<String, Value>,
) -> BTreeMap<&'static str, Value> {
    SettingKey::ALL
        .into_iter()
        .map(|key| {
            let value = stored.get(key.as_str()).cloned();
            (key.as_str(), value.unwrap_or_else(|| key.default_value()))
        })
        .collect()
}

impl App {
    /// The caller's site and its "Log in as user" rules (owners and admins).
    ///
    /// # Errors
    /// [`AppError::Forbidden`]; [`AppError::NotFound`] when it is not projected
    /// (yet).
    pub async fn site_row(&self, ctx: &RequestContext) -> Result<SiteRow, AppError> {
        authorize(&ctx.caller, Action::ReadSiteSettings)?;
        self.projected_site(ctx).await
    }

    /// The caller's site as the projections hold it.
    async fn projected_site(&self, ctx: &RequestContext) -> Result<SiteRow, AppError> {
        self.settle_for(&[crm_projections::users::NAME]).await?;
        users::site(self.store.database(), ctx.site())
            .await?
            .ok_or(AppError::NotFound("site"))
    }

    /// Who is signed in, as whom, in which session.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for a user not projected (yet).
    pub async fn me(&self, ctx: &RequestContext) -> Result<Me, AppError> {
        let db = self.settled(&[crm_projections::users::NAME]).await?;
        let user = |id| async move {
            users::get(db, ctx.site(), id)
                .await?
                .ok_or(AppError::NotFound("user"))
        };
        let impersonation = match ctx.impersonation() {
            None => None,
            Some(id) => audit_trail::session(db, ctx.site(), id).await?,
        };
        Ok(Me {
            user: user(ctx.subject()).await?,
            actor: user(ctx.actor()).await?,
            impersonation,
        })
    }

    /// The site's users, by name, each with "may the caller log in as this user".
    ///
    /// # Errors
    /// [`AppError::Forbidden`] for agents; a bad cursor.
    pub async fn users_list(
        &self,
        ctx: &RequestContext,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<ListedUser>, AppError> {
        authorize(&ctx.caller, Action::ReadUsers)?;
        // The site's read settles the projections for the list too.
        let rules = rules_of(&self.projected_site(ctx).await?);
        let page = users::list(self.store.database(), ctx.site(), cursor, limit).await?;
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(|user| {
                    let refused = may_impersonate(&ctx.caller, &view_of(&user), &rules, true).err();
                    ListedUser {
                        can_impersonate: refused.is_none(),
                        cannot_impersonate_because: refused.map(|r| r.to_string()),
                        user,
                    }
                })
                .collect(),
            next_cursor: page.next_cursor,
        })
    }

    /// The subject's Lead Manager (or, for owners and admins asking, the whole site's).
    ///
    /// # Errors
    /// [`AppError::Forbidden`] for `whole_site` asked by an agent; a bad cursor.
    pub async fn leads(
        &self,
        ctx: &RequestContext,
        query: LeadQuery,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<LeadPage, AppError> {
        self.settle_for(&[crm_projections::lead_manager::NAME])
            .await?;
        authorize(&ctx.caller, Action::ReadOwnLeads)?;
        let owner = if query.whole_site {
            authorize(&ctx.caller, Action::ReadAllLeads)?;
            Owner::Site(ctx.site())
        } else {
            Owner::AssignedTo(ctx.subject())
        };
        let filter = LeadFilter {
            owner,
            stage: query.stage,
            tag: query.tag,
            q: query.q,
        };
        let db = self.store.database();
        let page = lead_manager::list(db, &filter, query.sort, cursor, limit).await?;
        Ok(LeadPage {
            counts_by_stage: lead_manager::counts_by_stage(db, &filter).await?,
            items: page.items,
            next_cursor: page.next_cursor,
        })
    }

    /// One lead the subject may see, with its notes, tasks and communications.
    ///
    /// # Errors
    /// [`AppError::NotFound`] for a lead that does not exist, is archived, or is not
    /// the subject's to see.
    pub async fn lead_detail(
        &self,
        ctx: &RequestContext,
        id: LeadId,
    ) -> Result<LeadDetail, AppError> {
        let lead = self.lead_row(ctx, id).await?;
        if let Some(session) = ctx.impersonation() {
            // Recorded before anything is shown: a view that cannot be recorded
            // (the session ended meanwhile, the database is gone) shows nothing.
            // An idempotency key sent with a read keeps nothing: each opening is
            // recorded.
            let reading = RequestContext {
                idempotency_key: None,
                http_request: None,
                ..ctx.clone()
            };
            self.record(
                &reading,
                views_stream(session),
                ExpectedVersion::Any,
                vec![LeadViewed { lead_id: id }.into()],
            )
            .await?;
        }
        let db = self.store.database();
        Ok(LeadDetail {
            notes: lead_manager::notes(db, id).await?,
            tasks: lead_manager::tasks(db, id).await?,
            communications: lead_manager::communications(db, id).await?,
            lead,
        })
    }

    /// One lead the subject may see, as the Lead Manager lists it (what a write
    /// to it answers with).
    ///
    /// # Errors
    /// [`AppError::NotFound`] for a lead that does not exist, is archived, or is not
    /// the subject's to see.
    pub async fn lead_row(&self, ctx: &RequestContext, id: LeadId) -> Result<Lead, AppError> {
        let db = self.settled(&[crm_projections::lead_manager::NAME]).await?;
        authorize(&ctx.caller, Action::ReadOwnLeads)?;
        let lead = lead_manager::get(db, id)
            .await?
            .ok_or(AppError::NotFound("lead"))?;
        let visible = can_see_lead(
            &ctx.caller.subject,
            SiteId::from_uuid(lead.site_id),
            lead.assigned_agent_id.map(UserId::from_uuid),
        );
        if !visible || lead.archived {
            return Err(AppError::NotFound("lead"));
        }
        Ok(lead)
    }

    /// One note of a lead the subject may see.
    ///
    /// # Errors
    /// [`AppError::NotFound`].
    pub async fn note(
        &self,
        ctx: &RequestContext,
        lead: LeadId,
        id: NoteId,
    ) -> Result<Note, AppError> {
        let rows = lead_manager::notes(self.store.database(), lead);
        self.one_of_lead(ctx, lead, rows, |r| r.id == id.as_uuid(), "note")
            .await
    }

    /// One task of a lead the subject may see.
    ///
    /// # Errors
    /// [`AppError::NotFound`].
    pub async fn task(
        &self,
        ctx: &RequestContext,
        lead: LeadId,
        id: TaskId,
    ) -> Result<Task, AppError> {
        let rows = lead_manager::tasks(self.store.database(), lead);
        self.one_of_lead(ctx, lead, rows, |r| r.id == id.as_uuid(), "task")
            .await
    }

    /// One communication logged on a lead the subject may see.
    ///
    /// # Errors
    /// [`AppError::NotFound`].
    pub async fn communication(
        &self,
        ctx: &RequestContext,
        lead: LeadId,
        id: CommunicationId,
    ) -> Result<Communication, AppError> {
        let rows = lead_manager::communications(self.store.database(), lead);
        self.one_of_lead(ctx, lead, rows, |r| r.id == id.as_uuid(), "communication")
            .await
    }

    /// The row of a lead the subject may see that `is` picks among `rows` (read
    /// only once the lead is found visible: a future does nothing until awaited).
    async fn one_of_lead<T>(
        &self,
        ctx: &RequestContext,
        lead: LeadId,
        rows: impl std::future::Future<Output = Result<Vec<T>, crm_projections::QueryError>>,
        is: impl Fn(&T) -> bool,
        what: &'static str,
    ) -> Result<T, AppError> {
        self.lead_row(ctx, lead).await?;
        rows.await?
            .into_iter()
            .find(is)
            .ok_or(AppError::NotFound(what))
    }

    /// One of the subject's templates.
    ///
    /// # Errors
    /// [`AppError::NotFound`].
    pub async fn template(
        &self,
        ctx: &RequestContext,
        id: TemplateId,
    ) -> Result<Template, AppError> {
        let db = self.settled(&[crm_projections::settings::NAME]).await?;
        authorize(&ctx.caller, Action::ReadOwnSettings)?;
        settings_view::template(db, ctx.subject(), id)
            .await?
            .ok_or(AppError::NotFound("template"))
    }

    /// One user of the caller's site (owners, admins, auditors).
    ///
    /// # Errors
    /// [`AppError::Forbidden`] for agents; [`AppError::NotFound`].
    pub async fn user_row(&self, ctx: &RequestContext, id: UserId) -> Result<UserRow, AppError> {
        let db = self.settled(&[crm_projections::users::NAME]).await?;
        authorize(&ctx.caller, Action::ReadUsers)?;
        users::get(db, ctx.site(), id)
            .await?
            .ok_or(AppError::NotFound("user"))
    }

    /// The subject's settings, every key (defaults where never set), and the version.
    ///
    /// # Errors
    /// Store failures.
    pub async fn settings_view(
        &self,
        ctx: &RequestContext,
    ) -> Result<(BTreeMap<&'static str, Value>, i64), AppError> {
        self.settle_for(&[crm_projections::settings::NAME]).await?;
        authorize(&ctx.caller, Action::ReadOwnSettings)?;
        let (stored, version) = settings_view::get(self.store.database(), ctx.subject()).await?;
        Ok((with_defaults(&stored), version))
    }

    /// The subject's templates, by name.
    ///
    /// # Errors
    /// Store failures.
    pub async fn templates_view(&self, ctx: &RequestContext) -> Result<Vec<Template>, AppError> {
        self.settle_for(&[crm_projections::settings::NAME]).await?;
        authorize(&ctx.caller, Action::ReadOwnSettings)?;
        Ok(settings_view::templates(self.store.database(), ctx.subject()).await?)
    }

    /// The subject's notifications, newest first.
    ///
    /// # Errors
    /// A bad cursor; store failures.
    pub async fn notifications(
        &self,
        ctx: &RequestContext,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<notifications::Notification>, AppError> {
        self.settle_for(&[crm_projections::notifications::NAME])
            .await?;
        Ok(notifications::list(self.store.database(), ctx.subject(), cursor, limit).await?)
    }
}
