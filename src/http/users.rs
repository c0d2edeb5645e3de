//! Users and the site's impersonation settings.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use crm_events::ids::UserId;
use crm_projections::users::SiteRow;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::bodies::{versioned, written, List, ListedUser, User};
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{Auth, Body, IfMatch, Path, Query};
use super::input::{SiteSettingsPatch, UserInput, UserPatch};
use super::{AppState, PageQuery};
use crate::domain::policy::Action;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(update_user))
        .routes(routes!(get_site_settings, update_site_settings))
}

async fn user_body(
    state: &AppState,
    ctx: &crate::app::RequestContext,
    id: UserId,
) -> ApiResult<User> {
    Ok(User::from(state.app.user_row(ctx, id).await?))
}

/// The site's users, by name, each with whether the caller may log in as them.
#[utoipa::path(get, path = "/api/users", tag = "users", security(("bearer" = [])), params(PageQuery),
    responses((status = 200, body = List<ListedUser>), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn list_users(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<List<ListedUser>>> {
    let listed = state
        .app
        .users_list(&ctx, page.cursor.as_deref(), page.limit())
        .await?;
    Ok(Json(List {
        items: listed
            .items
            .into_iter()
            .map(|l| ListedUser {
                user: l.user.into(),
                can_impersonate: l.can_impersonate,
                cannot_impersonate_because: l.cannot_impersonate_because,
            })
            .collect(),
        next_cursor: listed.next_cursor,
    }))
}

/// Create a user (admins cannot create admins or owners).
#[utoipa::path(post, path = "/api/users", tag = "users", security(("bearer" = [])), request_body = UserInput,
    responses((status = 201, body = User), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_user(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Body(body): Body<UserInput>,
) -> ApiResult<Response> {
    state.app.may(&ctx, Action::ManageUsers)?;
    let (name, email, role, password) = body.parse().map_err(ApiError::validation)?;
    let (user, written_at) = state
        .app
        .create_user(&ctx, name, email, role, password)
        .await?;
    let body = user_body(&state, &ctx, user.id).await?;
    let version = body.version;
    Ok(written(
        StatusCode::CREATED,
        body,
        written_at.position,
        Some(version),
    ))
}

/// Change a user's role or active flag. Deactivating signs them out at once.
#[utoipa::path(patch, path = "/api/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "user id")), request_body = UserPatch,
    responses((status = 200, body = User), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn update_user(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Path(id): Path<UserId>,
    IfMatch(if_match): IfMatch,
    Body(body): Body<UserPatch>,
) -> ApiResult<Response> {
    state.app.may(&ctx, Action::ManageUsers)?;
    let (role, active) = body.parse().map_err(ApiError::validation)?;
    let (_, written_at) = state
        .app
        .update_user(&ctx, id, role, active, if_match)
        .await?;
    let body = user_body(&state, &ctx, id).await?;
    let version = body.version;
    Ok(written(
        StatusCode::OK,
        body,
        written_at.position,
        Some(version),
    ))
}

/// The site's impersonation settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SiteSettings {
    pub impersonation_enabled: bool,
    pub impersonation_max_minutes: i64,
    pub impersonation_reason_required: bool,
    pub notify_subject_on_impersonation: bool,
    pub version: i64,
}

impl From<SiteRow> for SiteSettings {
    fn from(row: SiteRow) -> Self {
        Self {
            impersonation_enabled: row.impersonation_enabled,
            impersonation_max_minutes: row.impersonation_max_minutes,
            impersonation_reason_required: row.impersonation_reason_required,
            notify_subject_on_impersonation: row.notify_subject_on_impersonation,
            version: row.version,
        }
    }
}

/// The site's impersonation settings (owners and admins).
#[utoipa::path(get, path = "/api/site/settings", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = SiteSettings), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn get_site_settings(State(state): State<AppState>, Auth(ctx): Auth) -> ApiResult<Response> {
    let settings = SiteSettings::from(state.app.site_row(&ctx).await?);
    let version = settings.version;
    Ok(versioned(settings, version))
}

/// Change the site's impersonation settings (the owner only).
#[utoipa::path(patch, path = "/api/site/settings", tag = "users", security(("bearer" = [])),
    request_body = SiteSettingsPatch,
    responses((status = 200, body = SiteSettings), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn update_site_settings(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    IfMatch(if_match): IfMatch,
    Body(body): Body<SiteSettingsPatch>,
) -> ApiResult<Response> {
    state.app.may(&ctx, Action::ChangeSiteSettings)?;
    let edit = body.parse().map_err(ApiError::validation)?;
    let (_, written_at) = state.app.change_site_settings(&ctx, edit, if_match).await?;
    let settings = SiteSettings::from(state.app.site_row(&ctx).await?);
    let version = settings.version;
    Ok(written(
        StatusCode::OK,
        settings,
        written_at.position,
        Some(version),
    ))
}
