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
use crate::export::Manifest;
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
    let order = super::audit::order(q.order.as_deref(), Order::NewestFirst)?;
    let after = match q.cursor.as_deref() {
        None => None,
        Some(cursor) => Some(
            cursor
                .parse::<i64>()
                .map_err(|_| ApiError::invalid("cursor", "not a cursor of this list"))?,
        ),
    };
    let limit = crm_projections::query::clamp_limit(q.limit);
    let page = state
        .app
        .audit_digests(&ctx, q.from_position.unwrap_or(0), order, after, limit)
        .await?;
    Ok(Json(page.into()))
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
    let key = state.app.audit_public_key(&ctx)?;
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
    let (filter, format) = super::audit::export_of(&q)?;
    Ok(Json(
        state
            .app
            .audit_export_manifest(&ctx, filter, format)
            .await?,
    ))
}
