//! The subject's settings, communication tools and templates.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use crm_events::ids::TemplateId;
use crm_projections::settings::Template;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::bodies::{no_content, versioned, written};
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{Auth, Body, IfMatch, Path};
use super::input::{TemplateInput, TemplatePatch};
use super::AppState;
use crate::domain::settings::SettingsChange;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_settings, update_settings))
        .routes(routes!(list_templates, create_template))
        .routes(routes!(update_template, delete_template))
}

/// Every settings key with its value (its default until changed).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SettingsBody {
    #[schema(value_type = Object)]
    pub settings: BTreeMap<&'static str, Value>,
    pub version: i64,
}

async fn settings_body(
    state: &AppState,
    ctx: &crate::app::RequestContext,
) -> ApiResult<SettingsBody> {
    let (settings, version) = state.app.settings_view(ctx).await?;
    Ok(SettingsBody { settings, version })
}

/// My settings (the subject's, while impersonating).
#[utoipa::path(get, path = "/api/settings", tag = "settings", security(("bearer" = [])),
    responses((status = 200, body = SettingsBody), (status = 401, body = Problem)))]
async fn get_settings(State(state): State<AppState>, Auth(ctx): Auth) -> ApiResult<Response> {
    let body = settings_body(&state, &ctx).await?;
    let version = body.version;
    Ok(versioned(body, version))
}

/// Change settings keys: `timezone`, `email_signature`, `notifications.new_lead_email`,
/// `notifications.task_reminder_minutes`, `communication.phone_number`,
/// `communication.sender_email`, `communication.texting_enabled`,
/// `lead_manager.default_sort`. Any other key is refused.
#[utoipa::path(patch, path = "/api/settings", tag = "settings", security(("bearer" = [])),
    request_body(content = Object, description = "{key: value, ...}"),
    responses((status = 200, body = SettingsBody), (status = 401, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn update_settings(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    IfMatch(if_match): IfMatch,
    Body(body): Body<Map<String, Value>>,
) -> ApiResult<Response> {
    let change = SettingsChange::parse(&body).map_err(ApiError::validation)?;
    let at = state.app.change_settings(&ctx, change, if_match).await?;
    let body = settings_body(&state, &ctx).await?;
    let version = body.version;
    Ok(written(StatusCode::OK, body, at.position, Some(version)))
}

/// My email and text templates.
#[utoipa::path(get, path = "/api/templates", tag = "settings", security(("bearer" = [])),
    responses((status = 200, body = Vec<Template>), (status = 401, body = Problem)))]
async fn list_templates(
    State(state): State<AppState>,
    Auth(ctx): Auth,
) -> ApiResult<Json<Vec<Template>>> {
    Ok(Json(state.app.templates_view(&ctx).await?))
}

async fn template_body(
    state: &AppState,
    ctx: &crate::app::RequestContext,
    id: TemplateId,
) -> ApiResult<Template> {
    Ok(state.app.template(ctx, id).await?)
}

/// Create a template (email templates need a subject; text ones have none).
#[utoipa::path(post, path = "/api/templates", tag = "settings", security(("bearer" = [])), request_body = TemplateInput,
    responses((status = 201, body = Template), (status = 401, body = Problem), (status = 422, body = Problem)))]
async fn create_template(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Body(body): Body<TemplateInput>,
) -> ApiResult<Response> {
    let (kind, name, subject, text) = body.parse().map_err(ApiError::validation)?;
    let (id, at) = state
        .app
        .create_template(&ctx, kind, name, subject, text)
        .await?;
    let template = template_body(&state, &ctx, id).await?;
    let version = template.version;
    Ok(written(
        StatusCode::CREATED,
        template,
        at.position,
        Some(version),
    ))
}

/// Edit a template; with `If-Match: "<version>"`, only if it is still at that version.
#[utoipa::path(patch, path = "/api/templates/{id}", tag = "settings", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "template id")), request_body = TemplatePatch,
    responses((status = 200, body = Template), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn update_template(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<TemplateId>,
    IfMatch(if_match): IfMatch,
    Body(body): Body<TemplatePatch>,
) -> ApiResult<Response> {
    let edit = body.parse().map_err(ApiError::validation)?;
    let at = state.app.update_template(&ctx, id, edit, if_match).await?;
    let template = template_body(&state, &ctx, id).await?;
    let version = template.version;
    Ok(written(
        StatusCode::OK,
        template,
        at.position,
        Some(version),
    ))
}

/// Delete a template; with `If-Match: "<version>"`, only if it is still at that version.
#[utoipa::path(delete, path = "/api/templates/{id}", tag = "settings", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "template id")),
    responses((status = 204), (status = 401, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn delete_template(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<TemplateId>,
    IfMatch(if_match): IfMatch,
) -> ApiResult<Response> {
    let at = state.app.delete_template(&ctx, id, if_match).await?;
    Ok(no_content(at.position))
}
