//! The audit trail for owners, admins and auditors (never while impersonating):
//! sessions, a session's changes, all changes filtered, streamed exports, and the
//! hash chain's verification.

use std::collections::hash_map::{Entry, HashMap};

use axum::body::Body as ResponseBody;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use crm_events::ids::{ImpersonationId, UserId};
use crm_projections::audit_trail::{Change, ChangeFilter, Session, SessionFilter};
use crm_projections::query::Order;
use crm_projections::users;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::bodies::{List, SessionBody, SessionDetailBody, User};
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{Auth, Path, Query};
use super::AppState;
use crate::app::RequestContext;
use crate::domain::policy::{authorize, Action};
use crate::export::Format;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_sessions))
        .routes(routes!(get_session))
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
    Ok(Json(with_people(&state, &ctx, page).await?))
}

/// A page of sessions, each with its admin and subject as users.
pub(super) async fn with_people(
    state: &AppState,
    ctx: &RequestContext,
    page: crm_projections::Page<Session>,
) -> ApiResult<List<SessionBody>> {
    // The page comes from a read that settled the projections already, and a
    // session's people were projected before it.
    let db = state.app.store().database();
    let mut known: HashMap<Uuid, User> = HashMap::new();
    let mut items = Vec::with_capacity(page.items.len());
    for session in page.items {
        for id in [session.admin_id, session.subject_id] {
            if let Entry::Vacant(slot) = known.entry(id) {
                let user = users::get(db, ctx.site(), UserId::from_uuid(id))
                    .await?
                    .ok_or_else(|| ApiError::not_found("user"))?;
                slot.insert(User::from(user));
            }
        }
        items.push(SessionBody {
            admin: known[&session.admin_id].clone(),
            subject: known[&session.subject_id].clone(),
            session,
        });
    }
    Ok(List {
        items,
        next_cursor: page.next_cursor,
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
    let page = crm_projections::Page {
        items: vec![detail.session],
        next_cursor: None,
    };
    let mut listed = with_people(&state, &ctx, page).await?;
    Ok(Json(SessionDetailBody {
        session: listed.items.remove(0),
        changes: detail.changes,
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
    authorize(&ctx.caller, Action::ReadAudit).map_err(crate::app::AppError::from)?;
    let (filter, format) = export_of(&state, &q).await?;
    let up_to = filter.up_to.unwrap_or(0);
    let chunks = crate::export::chunks(
        state.app.store().database().clone(),
        ctx.site(),
        filter,
        format,
    )
    .map(|chunk| {
        chunk.map_err(|error| {
            tracing::error!(%error, "audit export stopped");
            std::io::Error::other("the export could not be completed")
        })
    });
    let chunks = while_allowed(state.app.clone(), ctx, chunks);
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

/// An export's filter, with its `up_to` (the head unless given; never past it),
/// once the projections have folded that far; and its format.
pub(super) async fn export_of(
    state: &AppState,
    q: &ChangesQuery,
) -> ApiResult<(ChangeFilter, Format)> {
    let format = match q.format.as_deref() {
        None => Format::Csv,
        Some(name) => {
            Format::parse(name).ok_or_else(|| ApiError::invalid("format", "csv or ndjson"))?
        }
    };
    let head = state
        .app
        .store()
        .head()
        .await
        .map_err(crate::app::AppError::from)?;
    let up_to = q.up_to.unwrap_or(head.0);
    if up_to < 0 || up_to > head.0 {
        return Err(ApiError::invalid(
            "up_to",
            format!("a position from 0 to the head ({})", head.0),
        ));
    }
    state.app.settle().await?;
    let mut filter = q.filter(Order::OldestFirst)?;
    filter.up_to = Some(up_to);
    Ok((filter, format))
}

/// The export's pages for as long as the session that asked may read the audit
/// trail: re-checked before each page is read, and while a page goes out, before
/// each piece of it once [`super::events::RECHECK`] has passed since the last
/// check (a slow client takes its time over a large page). Once the session ended
/// or lost the right, the transfer stops short with an error and the log says
/// why; no later page is read.
fn while_allowed(
    app: crate::app::App,
    ctx: crate::app::RequestContext,
    chunks: impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    /// The most one piece of a page holds.
    const PIECE: usize = 64 * 1024;
    async_stream::stream! {
        let mut chunks = std::pin::pin!(chunks);
        let mut checked: Option<std::time::Instant> = None;
        'pages: loop {
            if let Err(stop) = still_allowed(&app, &ctx, &mut checked, true).await {
                yield Err(stop);
                break;
            }
            let page = match chunks.next().await {
                Some(Ok(page)) => page,
                Some(Err(error)) => {
                    yield Err(error);
                    break;
                }
                None => break,
            };
            for piece in page.chunks(PIECE) {
                if let Err(stop) = still_allowed(&app, &ctx, &mut checked, false).await {
                    yield Err(stop);
                    break 'pages;
                }
                yield Ok(piece.to_vec());
            }
        }
    }
}

/// Whether the export may go on: checked when `now` is asked for, or once
/// [`super::events::RECHECK`] has passed since the last check.
async fn still_allowed(
    app: &crate::app::App,
    ctx: &crate::app::RequestContext,
    checked: &mut Option<std::time::Instant>,
    now: bool,
) -> Result<(), std::io::Error> {
    if !now && checked.is_some_and(|at| at.elapsed() < super::events::RECHECK) {
        return Ok(());
    }
    *checked = Some(std::time::Instant::now());
    let ended = match app.why_reading_ends(ctx, Action::ReadAudit).await {
        Ok(None) => return Ok(()),
        Ok(Some(reason)) => reason,
        Err(error) => {
            tracing::error!(%error, "audit export: the session could not be checked");
            "unavailable"
        }
    };
    tracing::warn!(
        reason = ended,
        "audit export stopped: the session may no longer read it"
    );
    Err(std::io::Error::other(format!("the export ended: {ended}")))
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
    authorize(&ctx.caller, Action::ReadAudit).map_err(crate::app::AppError::from)?;
    let report = state.app.store().verify(Some(ctx.site())).await?;
    if !report.ok {
        // The server's own watch hears of it too (/healthz, X-Chain-Intact).
        state.app.note_chain(&report, 0).await;
    }
    let head = state
        .app
        .store()
        .chain_heads(Some(ctx.site()))
        .await?
        .into_iter()
        .next();
    let digests = state.app.check_digests(ctx.site()).await?;
    Ok(Json(VerifyBody {
        ok: report.ok && digests.as_ref().is_none_or(|d| d.ok),
        events_checked: report.events_checked,
        first_bad_position: report.first_bad_position.map(|p| p.0),
        problem: report.problem,
        checked_at: Utc::now(),
        head_position: head.map(|h| h.last_position.0),
        head_hash: head.map(|h| hex::encode(h.last_hash)),
        digests,
    }))
}
