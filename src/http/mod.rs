//! The HTTP API (axum), as `API.md` defines it: one module per resource, each with
//! its `router()`, merged here with the request id, body limit, timeout and tracing
//! layers; the OpenAPI document is generated from the same handlers.
//!
//! - [`session`]: sign-in, `me`, "Log in as user" / "Return to Admin".
//! - [`users`]: users and the site's impersonation settings.
//! - [`leads`]: the Lead Manager.
//! - [`settings`]: settings, communication tools, templates.
//! - [`audit`]: sessions, changes, exports, verification.
//! - [`events`]: the raw log and its SSE stream.
//! - [`proof`]: signed digests, the public key, export manifests.
//! - [`input`]: request bodies (and the CLI's arguments) as clients send them, and
//!   their parsing into the domain's values, naming every bad field.
//!
//! A handler parses, calls the command service ([`crate::app::App`]) and renders;
//! authorization, reads and the answers kept for retries are the service's.

pub mod audit;
pub mod bodies;
mod console;
pub mod error;
pub mod events;
pub mod extract;
mod idempotency;
pub mod input;
pub mod leads;
pub mod past;
pub mod proof;
pub mod session;
pub mod settings;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use crm_events::ids::CorrelationId;
use serde::Deserialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::app::App;
use error::ApiError;

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long one request may take before it is answered 408 (streams excepted).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub app: App,
}

/// `?limit=&cursor=` of the lists.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1 to 500 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    #[must_use]
    pub fn limit(&self) -> u32 {
        crm_projections::query::clamp_limit(self.limit)
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "crm", description = "Event-sourced CRM core with an audited \"Log in as user\"."),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every resource's routes, registered with their OpenAPI operations.
fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(session::router())
        .merge(users::router())
        .merge(leads::router())
        .merge(settings::router())
        .merge(audit::router())
        .merge(past::router())
        .merge(proof::router())
        .merge(events::router())
}

/// The whole API with its OpenAPI document (served at `/api/openapi.json`).
pub fn router(state: AppState) -> Router {
    let (api, openapi) = documented().split_for_parts();
    let openapi = Arc::new(openapi);
    api.merge(console::router())
        .route("/healthz", get(health))
        .route(
            "/api/openapi.json",
            get(move || {
                let openapi = openapi.clone();
                async move { Json(openapi.as_ref().clone()) }
            }),
        )
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::replay_or_record,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), chain_intact))
        .layer(middleware::from_fn(timeout_except_streams))
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// The document alone (for tooling and tests).
#[must_use]
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented().split_for_parts().1
}

/// `GET /healthz`: 200 when the database answers, `degraded` when the hash chain
/// is broken (with the first bad position) or a projection stopped; each
/// projection's position, how far behind the log's head it is, and why it
/// stopped. 503 when the database does not answer.
async fn health(State(state): State<AppState>) -> Response {
    match state.app.health().await {
        Ok(health) => {
            let status = if health.ok() { "ok" } else { "degraded" };
            Json(serde_json::json!({
                "status": status,
                "chain": health.chain,
                "projections": health.projections,
            }))
            .into_response()
        }
        Err(error) => {
            tracing::error!(%error, "health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({"status": "unavailable"})),
            )
                .into_response()
        }
    }
}

/// Every audit response says whether the server last found its chain intact
/// (`X-Chain-Intact: true|false`).
async fn chain_intact(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let audit = request.uri().path().starts_with("/api/audit");
    let mut response = next.run(request).await;
    if audit {
        let intact = if state.app.chain_status().ok {
            "true"
        } else {
            "false"
        };
        response
            .headers_mut()
            .insert("x-chain-intact", HeaderValue::from_static(intact));
    }
    response
}

/// Gives each request an id: the correlation id of every event it appends, the
/// `x-request-id` of its answer, and the span of its log lines. (Tokens are never
/// logged: the span records method and path only.)
async fn request_id(mut request: Request, next: Next) -> Response {
    let id = CorrelationId::generate();
    request.extensions_mut().insert(id);
    let span = tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path());
    let started = std::time::Instant::now();
    let mut response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "answered"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// Answers 408 when a request takes longer than [`REQUEST_TIMEOUT`], except the
/// event stream, which lives as long as its client.
async fn timeout_except_streams(request: Request, next: Next) -> Response {
    if request.uri().path() == "/api/events/stream" {
        return next.run(request).await;
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::timeout("the request took longer than 30 seconds").into_response(),
    }
}
