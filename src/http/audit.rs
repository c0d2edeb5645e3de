//! The audit trail for owners, admins and auditors (never while impersonating):
//! sessions, a session's changes, all changes filtered, streamed exports, and the
//! hash chain's verification.

use axum::body::Body as ResponseBody;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use crm_events::ids::{ImpersonationId, UserId};
use crm_projections::audit_trail::{Change, ChangeFilter, SessionFilter};
use crm_projections::query::Order;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::bodies::{written, List, SessionBody, SessionDetailBody};
use super::error::{ApiError, ApiResult, Problem};
use super::extract::Body;
use super::extract::{Auth, Path, Query};
use super::idempotency::NotKept;
use super::input::RevertInput;
use super::AppState;
use crate::app::audit::{SessionView, Verification};
use crate::export::Format;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_sessions))
        .routes(routes!(get_session))
        .routes(routes!(revert_session))
        .routes(routes!(list_changes))
        .routes(routes!(export_changes))
        .routes(routes!(verify_log))
}

/// `GET /api/audit/impersonations` query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SessionsQuery {
    #[param(value_type = Option<Uuid>)]
    admin_id: Option<UserId>,
    #[param(value_type = Option<Uuid>)]
    subject_id: Option<UserId>,
    /// Started at or after.
    from: Option<DateTime<Utc>>,
    /// Started before.
    to: Option<DateTime<Utc>>,
    /// `desc` (newest first, the default) or `asc`.
    #[param(value_type = Option<String>, pattern = "^(asc|desc)$")]
    order: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// The site's impersonation sessions, newest first.
#[utoipa::path(get, path = "/api/audit/impersonations", tag = "audit", security(("bearer" = [])), params(SessionsQuery),
    responses((status = 200, body = List<SessionBody>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn list_sessions(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Query(q): Query<SessionsQuery>,
) -> ApiResult<Json<List<SessionBody>>> {
    let filter = SessionFilter {
        admin_id: q.admin_id,
        subject_id: q.subject_id,
        from: q.from,
        to: q.to,
        order: order(q.order.as_deref(), Order::NewestFirst)?,
    };
    let limit = crm_projections::query::clamp_limit(q.limit);
    let page = state
        .app
        .audit_sessions(&ctx, &filter, q.cursor.as_deref(), limit)
        .await?;
    Ok(Json(listed(page)))
}

/// A page of sessions as the API shows them.
pub(super) fn listed(page: crm_projections::Page<SessionView>) -> List<SessionBody> {
    List {
        items: page.items.into_iter().map(SessionBody::from).collect(),
        next_cursor: page.next_cursor,
    }
}

/// One change of a reverted session and what the revert does with it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PlannedRevert {
    pub position: i64,
    pub entity_type: String,
    pub entity_id: Uuid,
    pub field: String,
    /// `revert` (put back), `conflict` (changed since: left alone) or
    /// `not_revertible` (the domain has no inverse; `why` says so).
    pub action: String,
    /// The value now.
    pub current: serde_json::Value,
    /// What the revert puts back: the value before the session changed it.
    pub target: serde_json::Value,
    /// Why a change is left alone.
    pub why: Option<String>,
}

/// What a revert did (or, on a dry run, would do).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct RevertPlan {
    /// Every change of the session, newest first.
    pub plan: Vec<PlannedRevert>,
    /// The position of the revert's last event; null on a dry run, which appends
    /// nothing.
    pub position: Option<i64>,
}

/// Reverts what an ended session changed (owner or admin, never while logged in as
/// someone, with a reason): each change, newest first, is put back where nothing
/// changed it since (as the caller, on the agent's account, caused by the session),
/// left alone where something did (`conflict`), or said to have no inverse
/// (`not_revertible`). `dry_run` plans and appends nothing.
#[utoipa::path(post, path = "/api/audit/impersonations/{id}/revert", tag = "audit", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "impersonation id")), request_body = RevertInput,
    responses((status = 200, body = RevertPlan), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn revert_session(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<ImpersonationId>,
    Body(body): Body<RevertInput>,
) -> Response {
    let mut response = revert(&state, &ctx, id, &body)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    // The answer holds the personal values of every lead the session touched, which
    // an erasure (by one lead) could not find to remove: no answer of a revert is
    // kept. A retry finds the key reserved by the revert, runs again, and is told
    // the session was reverted already.
    response.extensions_mut().insert(NotKept);
    response
}

async fn revert(
    state: &AppState,
    ctx: &crate::app::RequestContext,
    id: ImpersonationId,
    body: &RevertInput,
) -> ApiResult<Response> {
    let reason = body.parse().map_err(ApiError::validation)?;
    let reverted = state
        .app
        .revert_session(ctx, id, reason, body.dry_run)
        .await?;
    let plan = RevertPlan {
        plan: reverted
            .plan
            .into_iter()
            .map(|i| PlannedRevert {
                position: i.position,
                entity_type: i.entity_type.to_owned(),
                entity_id: i.entity_id,
                field: i.field,
                action: i.action.as_str().to_owned(),
                current: i.current,
                target: i.target,
                why: i.why,
            })
            .collect(),
        position: reverted.position,
    };
    Ok(match reverted.position {
        Some(at) => written(
            axum::http::StatusCode::OK,
            plan,
            crm_events::Position(at),
            None,
        ),
        None => Json(plan).into_response(),
    })
}

/// One session and every change made in it (before -> after).
#[utoipa::path(get, path = "/api/audit/impersonations/{id}", tag = "audit", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "impersonation id")),
    responses((status = 200, body = SessionDetailBody), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn get_session(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<ImpersonationId>,
) -> ApiResult<Json<SessionDetailBody>> {
    let detail = state.app.audit_session(&ctx, id).await?;
    Ok(Json(SessionDetailBody {
        session: SessionBody::from(detail.session),
        changes: detail.changes,
        reverted: detail.reverted,
    }))
}

/// `GET /api/audit/changes` and `/api/audit/export` filters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ChangesQuery {
    #[param(value_type = Option<Uuid>)]
    actor_id: Option<UserId>,
    #[param(value_type = Option<Uuid>)]
    subject_id: Option<UserId>,
    /// `lead`, `settings`, `template`, `user` or `site`.
    entity_type: Option<String>,
    entity_id: Option<Uuid>,
    /// Only changes made while impersonating (`true`) or not (`false`).
    impersonated: Option<bool>,
    /// Only the changes of one "Log in as user" session.
    #[param(value_type = Option<Uuid>)]
    impersonation_id: Option<ImpersonationId>,
    /// `change` (only what changed something) or `view` (only the leads opened
    /// while logged in as their agent); both when absent.
    #[param(value_type = Option<String>, pattern = "^(change|view)$")]
    kind: Option<String>,
    /// At or after.
    from: Option<DateTime<Utc>>,
    /// Before.
    to: Option<DateTime<Utc>>,
    /// `desc` (newest first; the list's default) or `asc` (log order; the
    /// export's default).
    #[param(value_type = Option<String>, pattern = "^(asc|desc)$")]
    order: Option<String>,
    /// Only changes at or before this position, named as they were then. The
    /// export's default is the head (answered in `X-Up-To-Position`): the same
    /// filter and `up_to` always give the same bytes.
    up_to: Option<i64>,
    limit: Option<u32>,
    cursor: Option<String>,
    /// For the export: `csv` (default) or `ndjson`.
    format: Option<String>,
}

impl ChangesQuery {
    fn filter(&self, default: Order) -> Result<ChangeFilter, ApiError> {
        Ok(ChangeFilter {
            actor_id: self.actor_id,
            subject_id: self.subject_id,
            entity_type: self.entity_type.clone().filter(|t| !t.is_empty()),
            entity_id: self.entity_id,
            impersonated: self.impersonated,
            impersonation_id: self.impersonation_id,
            views: match self.kind.as_deref() {
                None => None,
                Some("view") => Some(true),
                Some("change") => Some(false),
                Some(_) => return Err(ApiError::invalid("kind", "change or view")),
            },
            from: self.from,
            to: self.to,
            up_to: self.up_to,
            order: order(self.order.as_deref(), default)?,
        })
    }
}

/// The `order` asked for, or `default`.
pub(super) fn order(asked: Option<&str>, default: Order) -> Result<Order, ApiError> {
    match asked {
        None => Ok(default),
        Some(name) => Order::parse(name).ok_or_else(|| ApiError::invalid("order", "asc or desc")),
    }
}

/// Every change of the site, field by field, newest first unless `order=asc`.
#[utoipa::path(get, path = "/api/audit/changes", tag = "audit", security(("bearer" = [])), params(ChangesQuery),
    responses((status = 200, body = List<Change>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn list_changes(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Query(q): Query<ChangesQuery>,
) -> ApiResult<Json<List<Change>>> {
    if q.format.is_some() {
        return Err(ApiError::invalid(
            "format",
            "only the export takes a format",
        ));
    }
    let limit = crm_projections::query::clamp_limit(q.limit);
    Ok(Json(
        state
            .app
            .audit_changes(
                &ctx,
                &q.filter(Order::NewestFirst)?,
                q.cursor.as_deref(),
                limit,
            )
            .await?
            .into(),
    ))
}

/// The same changes as a file, streamed page by page (flat memory however large):
/// CSV (one row per change) or NDJSON (one JSON object per line), in log order
/// unless `order=desc`, with the names and the session's reason.
#[utoipa::path(get, path = "/api/audit/export", tag = "audit", security(("bearer" = [])), params(ChangesQuery),
    responses((status = 200, description = "text/csv or application/x-ndjson", content_type = "text/csv"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn export_changes(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Query(q): Query<ChangesQuery>,
) -> ApiResult<Response> {
    let (filter, format) = export_of(&q)?;
    let export = state.app.audit_export(&ctx, filter, format).await?;
    let up_to = export.up_to;
    let chunks = export.bytes;
    let csv = format == Format::Csv;
    let (content_type, extension) = if csv {
        ("text/csv; charset=utf-8", "csv")
    } else {
        ("application/x-ndjson", "ndjson")
    };
    let mut response = ResponseBody::from_stream(chunks).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&format!(
        "attachment; filename=\"audit-changes-{up_to}.{extension}\""
    )) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert("x-up-to-position", HeaderValue::from(up_to));
    Ok(response)
}

/// An export's filter (in log order unless asked otherwise) and format.
pub(super) fn export_of(q: &ChangesQuery) -> ApiResult<(ChangeFilter, Format)> {
    let format = match q.format.as_deref() {
        None => Format::Csv,
        Some(name) => {
            Format::parse(name).ok_or_else(|| ApiError::invalid("format", "csv or ndjson"))?
        }
    };
    Ok((q.filter(Order::OldestFirst)?, format))
}

/// The result of verifying the site's hash chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct VerifyBody {
    /// The chain intact and, when the server signs digests, the log as they attest.
    pub ok: bool,
    pub events_checked: u64,
    pub first_bad_position: Option<i64>,
    pub problem: Option<String>,
    /// When this check ran.
    pub checked_at: DateTime<Utc>,
    /// The site's recorded chain head: its last position and hash (hex), which an
    /// auditor can note down and compare later.
    pub head_position: Option<i64>,
    pub head_hash: Option<String>,
    /// The log checked against the site's signed digests (from the digest
    /// directory), when the server has a signing key.
    pub digests: Option<crm_events::digest::DigestReport>,
}

/// Recompute the site's hash chain and name the first bad position, if any.
#[utoipa::path(get, path = "/api/audit/verify", tag = "audit", security(("bearer" = [])),
    responses((status = 200, body = VerifyBody), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn verify_log(State(state): State<AppState>, Auth(ctx): Auth) -> ApiResult<Json<VerifyBody>> {
    let Verification {
        report,
        checked_at,
        head,
        digests,
    } = state.app.verify_site(&ctx).await?;
    Ok(Json(VerifyBody {
        ok: report.ok && digests.as_ref().is_none_or(|d| d.ok),
        events_checked: report.events_checked,
        first_bad_position: report.first_bad_position.map(|p| p.0),
        problem: report.problem,
        checked_at,
        head_position: head.map(|h| h.last_position.0),
        head_hash: head.map(|h| hex::encode(h.last_hash)),
        digests,
    }))
}
