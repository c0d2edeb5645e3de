//! Sign-in, the session, "Log in as user" and "Return to Admin", and what the
//! signed-in user reads about themselves.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use crm_projections::notifications::Notification;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::bodies::{
    no_content, written, ImpersonationInfo, List, LoginResponse, Me, SessionBody, User,
};
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{Auth, Body, ClientAddr, Correlation, Query};
use super::input::ImpersonationInput;
use super::{AppState, PageQuery};
use crate::app::RequestContext;
use crate::domain::values::Password;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(get_me))
        .routes(routes!(start_impersonation, return_to_admin))
        .routes(routes!(list_my_impersonations))
        .routes(routes!(list_my_notifications))
        .routes(routes!(mark_my_notifications_read))
        .routes(routes!(change_my_password))
}

/// `me` for a request context, read from the projections.
pub(super) async fn me_of(state: &AppState, ctx: &RequestContext) -> ApiResult<Me> {
    let me = state.app.me(ctx).await?;
    Ok(Me {
        user: User::from(me.user),
        actor: User::from(me.actor),
        impersonation: me.impersonation.map(|s| ImpersonationInfo {
            id: s.id,
            reason: s.reason,
            mode: s.mode,
            started_at: s.started_at,
            expires_at: s.expires_at,
        }),
    })
}

/// `POST /api/login`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    pub email: String,
    pub password: String,
}

/// Sign in; the token goes in `Authorization: Bearer <token>`. After repeated
/// failures for one account (5) or from one client address (20), attempts get 429
/// with `Retry-After` (seconds) until the wait is over, whatever the password; each
/// further failure doubles the wait, up to 15 minutes.
#[utoipa::path(post, path = "/api/login", tag = "session", request_body = LoginBody,
    responses((status = 200, body = LoginResponse), (status = 401, body = Problem), (status = 422, body = Problem),
        (status = 429, body = Problem, headers(("Retry-After" = u64, description = "seconds to wait")))))]
async fn login(
    State(state): State<AppState>,
    Correlation(correlation): Correlation,
    ClientAddr(client): ClientAddr,
    Body(body): Body<LoginBody>,
) -> ApiResult<Json<LoginResponse>> {
    let (token, ctx) = state
        .app
        .login_from(&body.email, &body.password, client, correlation)
        .await?;
    let me = me_of(&state, &ctx).await?;
    Ok(Json(LoginResponse { token, me }))
}

/// Sign out: ends the session and any impersonation in it (`logged_out`).
#[utoipa::path(post, path = "/api/logout", tag = "session", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = Problem)))]
async fn logout(State(state): State<AppState>, Auth(ctx): Auth) -> ApiResult<Response> {
    let written = state.app.logout(&ctx).await?;
    Ok(no_content(written.position))
}

/// Who the requests act as, who is signed in, and the impersonation in progress.
#[utoipa::path(get, path = "/api/me", tag = "session", security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = Problem)))]
async fn get_me(State(state): State<AppState>, Auth(ctx): Auth) -> ApiResult<Json<Me>> {
    Ok(Json(me_of(&state, &ctx).await?))
}

/// "Log in as user": an owner or admin starts acting as an agent.
#[utoipa::path(post, path = "/api/impersonation", tag = "session", security(("bearer" = [])),
    request_body = ImpersonationInput,
    responses((status = 200, body = Me), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn start_impersonation(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Body(body): Body<ImpersonationInput>,
) -> ApiResult<Response> {
    let reason = body.reason().map_err(ApiError::validation)?;
    let mode = body.mode().map_err(ApiError::validation)?;
    let (acting, at) = state
        .app
        .start_impersonation(&ctx, body.user_id, reason, mode)
        .await?;
    let me = me_of(&state, &acting).await?;
    Ok(written(StatusCode::OK, me, at.position, None))
}

/// "Return to Admin": ends the impersonation.
#[utoipa::path(delete, path = "/api/impersonation", tag = "session", security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = Problem), (status = 409, body = Problem)))]
async fn return_to_admin(State(state): State<AppState>, Auth(ctx): Auth) -> ApiResult<Response> {
    let (back, at) = state.app.return_to_admin(&ctx).await?;
    let me = me_of(&state, &back).await?;
    Ok(written(StatusCode::OK, me, at.position, None))
}

/// The sessions in which someone logged in as me (who, when, why, how many changes).
#[utoipa::path(get, path = "/api/me/impersonations", tag = "session", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, body = List<SessionBody>), (status = 401, body = Problem), (status = 403, body = Problem)))]
async fn list_my_impersonations(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<List<SessionBody>>> {
    let sessions = state
        .app
        .impersonations_of_me(&ctx, page.cursor.as_deref(), page.limit())
        .await?;
    Ok(Json(super::audit::listed(sessions)))
}

/// My notifications, newest first.
#[utoipa::path(get, path = "/api/me/notifications", tag = "session", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, body = List<Notification>), (status = 401, body = Problem)))]
async fn list_my_notifications(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Query(page): Query<PageQuery>,
) -> ApiResult<Json<List<Notification>>> {
    let notifications = state
        .app
        .notifications(&ctx, page.cursor.as_deref(), page.limit())
        .await?;
    Ok(Json(notifications.into()))
}

/// `POST /api/me/notifications/read`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationsReadBody {
    /// Mark read up to and including the notification at this position (every
    /// one, when left out): what the reader saw, not what arrived since.
    pub up_to_position: Option<i64>,
}

/// Mark my notifications read (never while logged in as someone else: the
/// notifications are the account holder's to read). 204, with `X-Position` when
/// something was marked.
#[utoipa::path(post, path = "/api/me/notifications/read", tag = "session", security(("bearer" = [])),
    request_body = NotificationsReadBody,
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn mark_my_notifications_read(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Body(body): Body<NotificationsReadBody>,
) -> ApiResult<Response> {
    let written = state
        .app
        .mark_notifications_read(&ctx, body.up_to_position)
        .await?;
    Ok(match written {
        Some(written) => no_content(written.position),
        None => axum::response::IntoResponse::into_response(axum::http::StatusCode::NO_CONTENT),
    })
}

/// `POST /api/me/password`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    pub current_password: String,
    pub new_password: String,
}

/// Change my password (never while logged in as someone else).
#[utoipa::path(post, path = "/api/me/password", tag = "session", security(("bearer" = [])),
    request_body = PasswordBody,
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn change_my_password(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Body(body): Body<PasswordBody>,
) -> ApiResult<Response> {
    state
        .app
        .may(&ctx, crate::domain::policy::Action::ChangeOwnPassword)?;
    let new = Password::parse(&body.new_password)
        .map_err(|why| ApiError::invalid("new_password", why))?;
    let written = state
        .app
        .change_password(&ctx, &body.current_password, new)
        .await?;
    Ok(no_content(written.position))
}
