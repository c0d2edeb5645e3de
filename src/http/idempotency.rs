//! `Idempotency-Key` on writes: a retry with the same key and request gets the first
//! response back (marked `idempotent-replayed: true`) and changes nothing; the same
//! key with another request is a 409 `conflict`.
//!
//! What a request appends reserves its key for the session in the same transaction
//! (a row with no answer yet, written with the events; see `app::sessions`), and
//! the answer is kept in that row once it is known. A retry that finds the key
//! reserved without an answer (the first attempt committed, but was cancelled or
//! timed out before its answer was kept) runs again, the store recognising its
//! append by the same key, which appends nothing, and is answered as a replay.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use crm_events::on_pool;
use sha2::{Digest, Sha256};

use super::error::ApiError;
use axum::extract::FromRequestParts;

use super::extract::{bearer, Auth, Fingerprint};
use super::{AppState, MAX_BODY_BYTES};
use crate::app::token_hash;

/// Responses are small JSON documents; a larger one is not kept.
const MAX_KEPT_RESPONSE: usize = 1024 * 1024;

pub(super) async fn replay_or_record(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let is_write = matches!(
        *request.method(),
        Method::POST | Method::PATCH | Method::PUT | Method::DELETE
    );
    let key = request
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let token = bearer(request.headers()).map(token_hash);
    let (Some(key), Some(token), true) = (key, token, is_write) else {
        return next.run(request).await;
    };
    if key.is_empty() || key.len() > 255 {
        return ApiError::invalid("Idempotency-Key", "must be 1 to 255 characters").into_response();
    }
    let (mut parts, body) = request.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_BODY_BYTES).await else {
        return ApiError::payload_too_large("the body is larger than 1 MiB").into_response();
    };
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str().as_bytes());
    hasher.update([0]);
    hasher.update(parts.uri.to_string().as_bytes());
    hasher.update([0]);
    hasher.update(&bytes);
    let fingerprint: [u8; 32] = hasher.finalize().into();

    let db = state.app.store().database();
    let found = match find(db, &token, &key).await {
        Err(error) => return ApiError::from(crm_events::StoreError::from(error)).into_response(),
        Ok(found) => found,
    };
    // An answer from before is given only to a session that may still make the
    // request, as what it acts as now (`Acting-As`): the handler's own checks. A
    // request run afresh gets them from its handler.
    if found.is_some() {
        if let Err(refused) = Auth::from_request_parts(&mut parts, &state).await {
            return refused.into_response();
        }
    }
    let replay = match found {
        Some(first) if first.fingerprint != fingerprint => {
            return ApiError::conflict(
                "this Idempotency-Key was already used for a different request",
            )
            .into_response();
        }
        Some(first) if first.status != RESERVED => return first.into_response(),
        // The first attempt committed; its answer was never kept.
        Some(_) => true,
        None => false,
    };

    parts.extensions.insert(Fingerprint(fingerprint));
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if response.status().is_server_error() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_KEPT_RESPONSE).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "response too large").into_response();
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let kept = Kept {
        fingerprint,
        status: parts.status.as_u16(),
        content_type,
        body: bytes.to_vec(),
    };
    if let Err(error) = keep(db, &token, &key, &kept).await {
        tracing::warn!(%error, "could not keep the response of an idempotent request");
    }
    if replay {
        parts
            .headers
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// The status of a key reserved by the append that committed its request, whose
/// answer is not kept (yet).
const RESERVED: u16 = 0;

/// A stored answer: fingerprint, status, content type, body.
type KeptRow = (Vec<u8>, i64, Option<String>, Vec<u8>);

struct Kept {
    fingerprint: [u8; 32],
    status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
}

impl IntoResponse for Kept {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        let mut response = (status, self.body).into_response();
        if let Some(value) = self
            .content_type
            .and_then(|c| HeaderValue::from_str(&c).ok())
        {
            response.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        response
    }
}

async fn find(
    db: &crm_events::Database,
    token: &[u8; 32],
    key: &str,
) -> Result<Option<Kept>, sqlx::Error> {
    let row: Option<KeptRow> = on_pool!(db, |pool| {
        sqlx::query_as(
        "SELECT fingerprint, status, content_type, body FROM http_idempotency WHERE token_hash = $1 AND key = $2"
    )
    .bind(token.as_slice())
    .bind(key)
    .fetch_optional(pool)
    .await?
    });
    Ok(row.map(|(fingerprint, status, content_type, body)| Kept {
        fingerprint: fingerprint.as_slice().try_into().unwrap_or([0; 32]),
        status: u16::try_from(status).unwrap_or(200),
        content_type,
        body,
    }))
}

async fn keep(
    db: &crm_events::Database,
    token: &[u8; 32],
    key: &str,
    kept: &Kept,
) -> Result<(), sqlx::Error> {
    on_pool!(db, |pool| {
        sqlx::query(
        "INSERT INTO http_idempotency (token_hash, key, fingerprint, status, content_type, body, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (token_hash, key) DO UPDATE \
         SET status = excluded.status, content_type = excluded.content_type, body = excluded.body \
         WHERE http_idempotency.status = 0"
    )
    .bind(token.as_slice())
    .bind(key)
    .bind(kept.fingerprint.as_slice())
    .bind(i64::from(kept.status))
    .bind(kept.content_type.as_deref())
    .bind(kept.body.as_slice())
    .bind(Utc::now())
    .execute(pool)
    .await
    .map(drop)
    })
}
