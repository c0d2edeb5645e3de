//! Proof for outsiders (owners, admins and auditors; never while impersonating):
//! the site's signed digests, the public key that checks them, and the signed
//! manifest of an export up to a position.

use axum::extract::State;
use axum::Json;
use crm_events::digest::SignedDigest;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::audit::ChangesQuery;
use super::bodies::List;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{Auth, Query};
use super::AppState;
use crate::domain::policy::{authorize, Action};
use crate::export::{Manifest, ManifestBody};
use crm_projections::query::Order;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_digests))
        .routes(routes!(public_key))
        .routes(routes!(export_manifest))
}

/// `GET /api/audit/digests` query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DigestsQuery {
    /// Only digests reaching this position or beyond.
    from_position: Option<i64>,
    /// `desc` (newest first, the default) or `asc`.
    #[param(value_type = Option<String>, pattern = "^(asc|desc)$")]
    order: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// The site's signed digests, newest first unless `order=asc`.
#[utoipa::path(get, path = "/api/audit/digests", tag = "audit", security(("bearer" = [])), params(DigestsQuery),
    responses((status = 200, body = List<SignedDigest>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn list_digests(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Query(q): Query<DigestsQuery>,
) -> ApiResult<Json<List<SignedDigest>>> {
    authorize(&ctx.caller, Action::ReadAudit).map_err(crate::app::AppError::from)?;
    let newest_first =
        super::audit::order(q.order.as_deref(), Order::NewestFirst)? == Order::NewestFirst;
    let after = match q.cursor.as_deref() {
        None => None,
        Some(cursor) => Some(
            cursor
                .parse::<i64>()
                .map_err(|_| ApiError::invalid("cursor", "not a cursor of this list"))?,
        ),
    };
    let limit = crm_projections::query::clamp_limit(q.limit);
    let mut items = state
        .app
        .store()
        .digests_listed(
            ctx.site(),
            q.from_position.unwrap_or(0),
            newest_first,
            after,
            limit + 1,
        )
        .await
        .map_err(crate::app::AppError::from)?;
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next_cursor = more
        .then(|| items.last().map(|d| d.body.seq.to_string()))
        .flatten();
    Ok(Json(List { items, next_cursor }))
}

/// The key that signs digests and manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PublicKeyBody {
    pub key_id: String,
    /// `ed25519`.
    pub algorithm: String,
    /// The 32 key bytes, base64.
    pub public_key: String,
    /// The same key as SPKI PEM (what `crm verify --public-key` and OpenSSL read).
    pub pem: String,
}

/// The public key of the server's signing key; 404 when it signs nothing.
#[utoipa::path(get, path = "/api/audit/public-key", tag = "audit", security(("bearer" = [])),
    responses((status = 200, body = PublicKeyBody), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn public_key(
    State(state): State<AppState>,
    Auth(ctx): Auth,
) -> ApiResult<Json<PublicKeyBody>> {
    authorize(&ctx.caller, Action::ReadAudit).map_err(crate::app::AppError::from)?;
    let key = state
        .app
        .public_key()
        .ok_or_else(|| ApiError::not_found("signing key"))?;
    Ok(Json(PublicKeyBody {
        key_id: key.id().to_owned(),
        algorithm: "ed25519".into(),
        public_key: key.base64(),
        pem: key.pem(),
    }))
}

/// The signed manifest of the export with the same filter, format and `up_to`
/// (default: the head): its rows and SHA-256, which `crm audit verify-export`
/// checks offline. 404 when the server signs nothing.
#[utoipa::path(get, path = "/api/audit/export/manifest", tag = "audit", security(("bearer" = [])), params(ChangesQuery),
    responses((status = 200, body = Manifest), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn export_manifest(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Query(q): Query<ChangesQuery>,
) -> ApiResult<Json<Manifest>> {
    authorize(&ctx.caller, Action::ReadAudit).map_err(crate::app::AppError::from)?;
    let key = state
        .app
        .public_key()
        .ok_or_else(|| ApiError::not_found("signing key"))?;
    let (filter, format) = super::audit::export_of(&state, &q).await?;
    let up_to_position = filter.up_to.unwrap_or(0);
    let (rows, sha256) = crate::export::measure(
        state.app.store().database().clone(),
        ctx.site(),
        filter.clone(),
        format,
    )
    .await
    .map_err(crate::app::AppError::from)?;
    let body = ManifestBody {
        site_id: ctx.site(),
        filter: crate::export::filter_params(&filter),
        format: format.name().to_owned(),
        up_to_position,
        rows,
        sha256,
        signed_at: state.app.clock().now(),
        key_id: key.id().to_owned(),
    };
    let Some((_, signature)) = state.app.sign(&body.canonical()) else {
        return Err(ApiError::not_found("signing key"));
    };
    Ok(Json(Manifest { body, signature }))
}
