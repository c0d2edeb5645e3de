//! The agent's screen at any moment: a user's Lead Manager, one of their leads and
//! their settings as the projections showed them at a past time or position of
//! the log (see [`crm_projections::past`]). Owners, admins and auditors see any
//! user of their site; anyone sees their own; never while logged in as someone.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use crm_events::ids::{LeadId, SiteId, UserId};
use crm_events::Position;
use crm_projections::lead_manager::{LeadFilter, Owner};
use crm_projections::past;
use crm_projections::settings::Template;
use crm_projections::users::{self, UserRow};
use serde::Serialize;
use serde_json::Value;

use super::reads::{view_of, with_defaults, LeadDetail, LeadPage, LeadQuery};
use super::{App, AppError, RequestContext};
use crate::domain::policy::{authorize, can_see_lead, Action, UserView};

/// A past moment: a position of the log, or a time (the position the log's head
/// was at then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    Position(Position),
    Time(DateTime<Utc>),
}

impl At {
    /// A position (a whole number) or an RFC 3339 time.
    ///
    /// # Errors
    /// Why the text is neither.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return text
                .parse::<i64>()
                .map(|p| Self::Position(Position(p)))
                .map_err(|_| "the position is too large".to_owned());
        }
        DateTime::parse_from_rfc3339(text)
            .map(|t| Self::Time(t.with_timezone(&Utc)))
            .map_err(|_| "a position of the log (a whole number) or an RFC 3339 time".to_owned())
    }
}

/// A user's Lead Manager at a past position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PastLeadPage {
    /// The log's position the page is folded to: pass it as `at` for the next page.
    pub position: i64,
    pub subject_id: uuid::Uuid,
    #[serde(flatten)]
    pub page: LeadPage,
}

/// A lead at a past position, with its notes, tasks and communications then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PastLeadDetail {
    pub position: i64,
    pub subject_id: uuid::Uuid,
    #[serde(flatten)]
    pub detail: LeadDetail,
}

/// A user's settings (every key, defaults where not set then) and templates at a
/// past position.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PastSettings {
    pub position: i64,
    pub subject_id: uuid::Uuid,
    #[schema(value_type = Object)]
    pub settings: BTreeMap<&'static str, Value>,
    /// The settings stream's version then.
    pub version: i64,
    pub templates: Vec<Template>,
}

impl App {
    /// Whose past the caller may see (their own, or, for owners, admins and
    /// auditors, anyone's of their site), and the position `at` names: the head
    /// when `None`. The projections are settled past it, so that which leads a
    /// user held then is known.
    async fn past_of(
        &self,
        ctx: &RequestContext,
        subject: Option<UserId>,
        at: Option<At>,
    ) -> Result<(UserRow, UserView, Position), AppError> {
        let subject = subject.unwrap_or(ctx.actor());
        authorize(&ctx.caller, Action::ReadOwnPast)?;
        if subject != ctx.actor() {
            authorize(&ctx.caller, Action::ReadAudit)?;
        }
        let head = self.store.head().await?;
        let position = match at {
            None => head,
            Some(At::Position(p)) if p.0 < 0 => {
                return Err(AppError::invalid("at", "a position is 0 or more"))
            }
            Some(At::Position(p)) if p > head => {
                return Err(AppError::invalid(
                    "at",
                    format!("position {} is past the log's head ({})", p.0, head.0),
                ))
            }
            // A position inside a batch names a state nobody could read: the
            // batch's end is what the projections showed.
            Some(At::Position(p)) => self.store.batch_end(p).await?,
            Some(At::Time(time)) => self.store.position_at(time).await?,
        };
        let db = self
            .settled(&[
                crm_projections::users::NAME,
                crm_projections::lead_manager::NAME,
            ])
            .await?;
        let user = users::get(db, ctx.site(), subject)
            .await?
            .ok_or(AppError::NotFound("user"))?;
        // Who they were then: what a lead shows depends on the role they had; an
        // account that did not exist yet saw nothing. (Deactivated since or then,
        // what their screen showed while they could use it is what is asked.)
        let role = past::role_at(&self.store, subject, position)
            .await?
            .ok_or(AppError::NotFound("user"))?;
        let then = UserView {
            role,
            active: true,
            ..view_of(&user)
        };
        Ok((user, then, position))
    }

    /// `subject`'s Lead Manager (the leads assigned to them) as it was at `at`.
    ///
    /// # Errors
    /// [`AppError::Forbidden`] for someone else's without the audit, and while
    /// logged in as someone; [`AppError::NotFound`] for a user of another site;
    /// [`AppError::Invalid`] for a position past the head, a scope or a bad cursor.
    pub async fn past_leads(
        &self,
        ctx: &RequestContext,
        subject: Option<UserId>,
        at: Option<At>,
        query: LeadQuery,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<PastLeadPage, AppError> {
        if query.whole_site {
            return Err(AppError::invalid(
                "scope",
                "a past Lead Manager is the subject's own",
            ));
        }
        let (user, _, position) = self.past_of(ctx, subject, at).await?;
        let subject = UserId::from_uuid(user.id);
        let filter = LeadFilter {
            owner: Owner::AssignedTo(subject),
            stage: query.stage,
            tag: query.tag,
            q: query.q,
        };
        let (page, counts_by_stage) = past::lead_manager(
            &self.store,
            subject,
            position,
            &filter,
            query.sort,
            cursor,
            limit,
        )
        .await?;
        Ok(PastLeadPage {
            position: position.0,
            subject_id: user.id,
            page: LeadPage {
                items: page.items,
                counts_by_stage,
                next_cursor: page.next_cursor,
            },
        })
    }

    /// One lead as `subject` could open it at `at`, with its notes, tasks and
    /// communications then.
    ///
    /// # Errors
    /// As [`App::past_leads`]; [`AppError::NotFound`] for a lead that did not
    /// exist then, was archived, or was not the subject's to see.
    pub async fn past_lead(
        &self,
        ctx: &RequestContext,
        subject: Option<UserId>,
        at: Option<At>,
        id: LeadId,
    ) -> Result<PastLeadDetail, AppError> {
        let (user, then, position) = self.past_of(ctx, subject, at).await?;
        let (lead, notes, tasks, communications) = past::lead(&self.store, id, position)
            .await?
            .ok_or(AppError::NotFound("lead"))?;
        // Whether the subject could open it then, with the role they had then.
        let visible = can_see_lead(
            &then,
            SiteId::from_uuid(lead.site_id),
            lead.assigned_agent_id.map(UserId::from_uuid),
        );
        if !visible || lead.archived {
            return Err(AppError::NotFound("lead"));
        }
        Ok(PastLeadDetail {
            position: position.0,
            subject_id: user.id,
            detail: LeadDetail {
                lead,
                notes,
                tasks,
                communications,
            },
        })
    }

    /// `subject`'s settings and templates as they were at `at`.
    ///
    /// # Errors
    /// As [`App::past_leads`].
    pub async fn past_settings(
        &self,
        ctx: &RequestContext,
        subject: Option<UserId>,
        at: Option<At>,
    ) -> Result<PastSettings, AppError> {
        let (user, _, position) = self.past_of(ctx, subject, at).await?;
        let (stored, version, templates) =
            past::settings(&self.store, UserId::from_uuid(user.id), position).await?;
        Ok(PastSettings {
            position: position.0,
            subject_id: user.id,
            settings: with_defaults(&stored),
            version,
            templates,
        })
    }
}
