//! The Lead Manager. Acts as the subject: while impersonating, the admin works the
//! agent's leads.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use crm_events::catalog::values::Stage;
use crm_events::ids::{LeadId, TaskId, UserId};
use crm_projections::lead_manager::{Communication, Lead, LeadSort, Note, Task};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::bodies::{no_content, versioned, written};
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{Auth, Body, IfMatch, Path, Query};
use super::input::{CommunicationInput, ErasureInput, LeadInput, LeadPatch, NoteInput, TaskInput};
use super::AppState;
use crate::app::reads::{LeadDetail, LeadPage, LeadQuery};
use crate::app::Written;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_leads, create_lead))
        .routes(routes!(get_lead, update_lead, archive_lead))
        .routes(routes!(assign_lead))
        .routes(routes!(add_note))
        .routes(routes!(create_task))
        .routes(routes!(complete_task))
        .routes(routes!(log_communication))
        .routes(routes!(erase_lead))
}

/// `GET /api/leads` query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LeadsQuery {
    /// Only this stage.
    stage: Option<String>,
    /// Only leads with this tag.
    tag: Option<String>,
    /// Text in the name, email or phone.
    q: Option<String>,
    /// `updated_at`, `-updated_at` (default), `name` or `next_task_due_at`.
    sort: Option<String>,
    /// `site`: every lead of the site (owners and admins).
    scope: Option<String>,
    /// 1 to 500 (default 50).
    limit: Option<u32>,
    cursor: Option<String>,
}

/// The Lead Manager: the subject's leads, counts per stage, filters, sorts, pages.
#[utoipa::path(get, path = "/api/leads", tag = "leads", security(("bearer" = [])), params(LeadsQuery),
    responses((status = 200, body = LeadPage), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn list_leads(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Query(query): Query<LeadsQuery>,
) -> ApiResult<axum::Json<LeadPage>> {
    let mut lead_query = lead_query(query.stage, query.tag, query.q, query.sort)?;
    lead_query.whole_site = match query.scope.as_deref() {
        None | Some("") => false,
        Some("site") => true,
        Some(_) => return Err(ApiError::invalid("scope", "the only scope is `site`")),
    };
    let limit = crm_projections::query::clamp_limit(query.limit);
    Ok(axum::Json(
        state
            .app
            .leads(&ctx, lead_query, query.cursor.as_deref(), limit)
            .await?,
    ))
}

/// The Lead Manager's filters and sort as a query gives them (of the subject's
/// own leads).
///
/// # Errors
/// 422 for a stage or sort that is not one.
pub(super) fn lead_query(
    stage: Option<String>,
    tag: Option<String>,
    q: Option<String>,
    sort: Option<String>,
) -> ApiResult<LeadQuery> {
    for (field, text) in [("q", &q), ("tag", &tag)] {
        if text.as_deref().is_some_and(|t| t.contains('\0')) {
            return Err(ApiError::invalid(field, "must not contain a NUL character"));
        }
    }
    let stage = match stage.as_deref() {
        None | Some("") => None,
        Some(text) => {
            Some(Stage::parse(text).ok_or_else(|| ApiError::invalid("stage", "not a stage"))?)
        }
    };
    let sort = match sort.as_deref() {
        None | Some("") => LeadSort::default(),
        Some(text) => LeadSort::parse(text).ok_or_else(|| {
            ApiError::invalid(
                "sort",
                "one of updated_at, -updated_at, name, next_task_due_at",
            )
        })?,
    };
    Ok(LeadQuery {
        stage,
        tag: tag.filter(|t| !t.is_empty()),
        q,
        sort,
        whole_site: false,
    })
}

fn lead_written(lead: Lead, status: StatusCode, at: Written) -> Response {
    let version = lead.version;
    written(status, lead, at.position, Some(version))
}

/// Create a lead (only owners and admins may assign it to someone else).
#[utoipa::path(post, path = "/api/leads", tag = "leads", security(("bearer" = [])), request_body = LeadInput,
    responses((status = 201, body = Lead), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn create_lead(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Body(body): Body<LeadInput>,
) -> ApiResult<Response> {
    let new = body.parse().map_err(ApiError::validation)?;
    let (id, at) = state.app.create_lead(&ctx, new).await?;
    Ok(lead_written(
        state.app.lead_row(&ctx, id).await?,
        StatusCode::CREATED,
        at,
    ))
}

/// A lead with its notes, tasks and communications (404 when not the subject's to see).
#[utoipa::path(get, path = "/api/leads/{id}", tag = "leads", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "lead id")),
    responses((status = 200, body = LeadDetail), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn get_lead(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<LeadId>,
) -> ApiResult<Response> {
    let detail = state.app.lead_detail(&ctx, id).await?;
    let version = detail.lead.version;
    Ok(versioned(detail, version))
}

/// Edit a lead's fields, stage and tags (`If-Match` for optimistic concurrency).
#[utoipa::path(patch, path = "/api/leads/{id}", tag = "leads", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "lead id")), request_body = LeadPatch,
    responses((status = 200, body = Lead), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn update_lead(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<LeadId>,
    IfMatch(if_match): IfMatch,
    Body(body): Body<LeadPatch>,
) -> ApiResult<Response> {
    let edit = body.parse().map_err(ApiError::validation)?;
    let at = state.app.edit_lead(&ctx, id, edit, if_match).await?;
    Ok(lead_written(
        state.app.lead_row(&ctx, id).await?,
        StatusCode::OK,
        at,
    ))
}

/// Archive a lead.
#[utoipa::path(delete, path = "/api/leads/{id}", tag = "leads", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "lead id")),
    responses((status = 204), (status = 401, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn archive_lead(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<LeadId>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<Response> {
    let at = state.app.archive_lead(&ctx, id, if_match).await?;
    Ok(no_content(at.position))
}

/// What an erasure answers.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct Erased {
    pub id: uuid::Uuid,
    pub erased_at: chrono::DateTime<chrono::Utc>,
    /// The position of the `LeadErased` event.
    pub position: i64,
}

/// Erase a lead's personal data (owners and admins, never while logged in as
/// someone): its name, email, phone and its notes', tasks' and communications'
/// texts become unreadable everywhere, for good; the log stays verifiable and the
/// audit trail keeps who changed which field when. Erasing it again answers the
/// first erasure.
#[utoipa::path(post, path = "/api/leads/{id}/erase", tag = "leads", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "lead id")), request_body = ErasureInput,
    responses((status = 200, body = Erased), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn erase_lead(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<LeadId>,
    Body(body): Body<ErasureInput>,
) -> ApiResult<Response> {
    let reason = body.parse().map_err(ApiError::validation)?;
    let erasure = state.app.erase_lead(&ctx, id, reason).await?;
    let body = Erased {
        id: erasure.id.as_uuid(),
        erased_at: erasure.erased_at,
        position: erasure.position.0,
    };
    Ok(written(StatusCode::OK, body, erasure.position, None))
}

/// `POST /api/leads/{id}/assign`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    #[schema(value_type = uuid::Uuid)]
    pub agent_id: UserId,
}

/// Assign a lead to another agent (owners and admins).
#[utoipa::path(post, path = "/api/leads/{id}/assign", tag = "leads", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "lead id")), request_body = AssignBody,
    responses((status = 200, body = Lead), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn assign_lead(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<LeadId>,
    IfMatch(if_match): IfMatch,
    Body(body): Body<AssignBody>,
) -> ApiResult<Response> {
    let at = state
        .app
        .assign_lead(&ctx, id, body.agent_id, if_match)
        .await?;
    Ok(lead_written(
        state.app.lead_row(&ctx, id).await?,
        StatusCode::OK,
        at,
    ))
}

/// Add a note.
#[utoipa::path(post, path = "/api/leads/{id}/notes", tag = "leads", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "lead id")), request_body = NoteInput,
    responses((status = 201, body = Note), (status = 401, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn add_note(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<LeadId>,
    Body(body): Body<NoteInput>,
) -> ApiResult<Response> {
    let text = body.parse().map_err(ApiError::validation)?;
    let (note, at) = state.app.add_note(&ctx, id, text).await?;
    let note = state.app.note(&ctx, id, note).await?;
    Ok(written(StatusCode::CREATED, note, at.position, None))
}

/// Create a follow-up task.
#[utoipa::path(post, path = "/api/leads/{id}/tasks", tag = "leads", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "lead id")), request_body = TaskInput,
    responses((status = 201, body = Task), (status = 401, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn create_task(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<LeadId>,
    Body(body): Body<TaskInput>,
) -> ApiResult<Response> {
    let (title, due) = body.parse().map_err(ApiError::validation)?;
    let (task, at) = state.app.create_task(&ctx, id, title, due).await?;
    Ok(written(
        StatusCode::CREATED,
        state.app.task(&ctx, id, task).await?,
        at.position,
        None,
    ))
}

/// Complete a task.
#[utoipa::path(post, path = "/api/leads/{id}/tasks/{task_id}/complete", tag = "leads", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "lead id"), ("task_id" = uuid::Uuid, Path, description = "task id")),
    responses((status = 200, body = Task), (status = 401, body = Problem), (status = 404, body = Problem)))]
async fn complete_task(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Path((id, task)): Path<(LeadId, TaskId)>,
) -> ApiResult<Response> {
    let at = state.app.complete_task(&ctx, id, task).await?;
    Ok(written(
        StatusCode::OK,
        state.app.task(&ctx, id, task).await?,
        at.position,
        None,
    ))
}

/// Log a call, email or text.
#[utoipa::path(post, path = "/api/leads/{id}/communications", tag = "leads", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "lead id")), request_body = CommunicationInput,
    responses((status = 201, body = Communication), (status = 401, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn log_communication(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<LeadId>,
    Body(body): Body<CommunicationInput>,
) -> ApiResult<Response> {
    let (channel, direction, summary) = body.parse().map_err(ApiError::validation)?;
    let (logged, at) = state
        .app
        .log_communication(&ctx, id, channel, direction, summary)
        .await?;
    let logged = state.app.communication(&ctx, id, logged).await?;
    Ok(written(StatusCode::CREATED, logged, at.position, None))
}
