//! The agent's screen at any moment (`/api/audit/view/…`): a user's Lead Manager,
//! a lead and settings as they were at a past time or position. Owners, admins and
//! auditors see anyone of their site; anyone sees their own; never while logged in
//! as someone.

use axum::extract::State;
use axum::Json;
use crm_events::ids::{LeadId, UserId};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult, Problem};
use super::extract::{Auth, Path, Query};
use super::leads::lead_query;
use super::AppState;
use crate::app::past::{At, PastLeadDetail, PastLeadPage, PastSettings};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(past_leads))
        .routes(routes!(past_lead))
        .routes(routes!(past_settings))
}

/// `at`, parsed (absent or empty: now).
fn at(text: Option<&str>) -> ApiResult<Option<At>> {
    match text {
        None | Some("") => Ok(None),
        Some(text) => At::parse(text)
            .map(Some)
            .map_err(|why| ApiError::invalid("at", why)),
    }
}

/// `GET /api/audit/view/leads` query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PastLeadsQuery {
    /// Whose Lead Manager (default: mine).
    #[param(value_type = Option<uuid::Uuid>)]
    subject_id: Option<UserId>,
    /// A position of the log (a whole number) or an RFC 3339 time (default: now).
    at: Option<String>,
    /// Only this stage.
    stage: Option<String>,
    /// Only leads with this tag.
    tag: Option<String>,
    /// Text in the name, email or phone.
    q: Option<String>,
    /// `updated_at`, `-updated_at` (default), `name` or `next_task_due_at`.
    sort: Option<String>,
    /// 1 to 500 (default 50).
    limit: Option<u32>,
    /// `next_cursor` of the page before, with `at` set to that page's `position`.
    cursor: Option<String>,
}

/// A user's Lead Manager as it was at a past time or position, folded from the log:
/// the leads assigned to them then, with the Lead Manager's filters, sorts and pages.
#[utoipa::path(get, path = "/api/audit/view/leads", tag = "audit", security(("bearer" = [])), params(PastLeadsQuery),
    responses((status = 200, body = PastLeadPage), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn past_leads(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Query(query): Query<PastLeadsQuery>,
) -> ApiResult<Json<PastLeadPage>> {
    let at = at(query.at.as_deref())?;
    let lead_query = lead_query(query.stage, query.tag, query.q, query.sort)?;
    let limit = crm_projections::query::clamp_limit(query.limit);
    Ok(Json(
        state
            .app
            .past_leads(
                &ctx,
                query.subject_id,
                at,
                lead_query,
                query.cursor.as_deref(),
                limit,
            )
            .await?,
    ))
}

/// `GET /api/audit/view/leads/{id}` and `/api/audit/view/settings` query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PastQuery {
    /// Whose view (default: mine).
    #[param(value_type = Option<uuid::Uuid>)]
    subject_id: Option<UserId>,
    /// A position of the log (a whole number) or an RFC 3339 time (default: now).
    at: Option<String>,
}

/// A lead as the user could open it at a past time or position, with its notes,
/// tasks and communications then (404 when it did not exist then, was archived, or
/// was not theirs to see).
#[utoipa::path(get, path = "/api/audit/view/leads/{id}", tag = "audit", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "lead id"), PastQuery),
    responses((status = 200, body = PastLeadDetail), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn past_lead(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<LeadId>,
    Query(query): Query<PastQuery>,
) -> ApiResult<Json<PastLeadDetail>> {
    let at = at(query.at.as_deref())?;
    Ok(Json(
        state.app.past_lead(&ctx, query.subject_id, at, id).await?,
    ))
}

/// A user's settings (every key) and templates as they were at a past time or
/// position.
#[utoipa::path(get, path = "/api/audit/view/settings", tag = "audit", security(("bearer" = [])), params(PastQuery),
    responses((status = 200, body = PastSettings), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn past_settings(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Query(query): Query<PastQuery>,
) -> ApiResult<Json<PastSettings>> {
    let at = at(query.at.as_deref())?;
    Ok(Json(
        state.app.past_settings(&ctx, query.subject_id, at).await?,
    ))
}
