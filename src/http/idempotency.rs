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
use sha2::{Digest, Sha256};

use super::error::ApiError;
use axum::extract::FromRequestParts;

use super::extract::{bearer, Auth, Fingerprint};
use super::{AppState, MAX_BODY_BYTES};
use crate::app::responses::KeptResponse;
use crate::app::token_hash;

/// Set on a response by a handler whose answer must not be kept for retries: a
/// retry then finds its key as the write reserved it, and runs again.
#[derive(Debug, Clone, Copy)]
pub(super) struct NotKept;

/// Responses are small JSON documents; a larger one is not kept.
const MAX_KEPT_RESPONSE: usize = 1024 * 1024;

/// The largest answer this layer reads through (a revert's plan of a long session);
/// what it does not keep it still answers.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

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

    let found = match state.app.kept_response(&token, &key).await {
        Err(error) => return ApiError::from(error).into_response(),
        Ok(found) => found,
    };
    // An answer from before is given only to a session that may still make the
    // request, as what it acts as now (`Acting-As`): the handler's own checks. A
    // request run afresh gets them from its handler.
    // A view-only session writes nothing: an answer kept from a session that
    // could (or a key reserved by one) is neither given back to it nor run again
    // (that run's refusal would replace what the first attempt did). Ending the
    // session is not a write of the agent's account.
    if found.is_some() {
        let ctx = match Auth::from_request_parts(&mut parts, &state).await {
            Err(refused) => return refused.into_response(),
            Ok(Auth(ctx)) => ctx,
        };
        let path = parts.uri.path();
        let ends_session = path == "/api/logout"
            || (path == "/api/impersonation" && parts.method == Method::DELETE);
        if !ends_session {
            if let Err(refused) = state.app.may_write(&ctx) {
                return ApiError::from(refused).into_response();
            }
        }
    }
    let replay = match found {
        Some(first) if first.fingerprint != fingerprint => {
            return ApiError::conflict(
                "this Idempotency-Key was already used for a different request",
            )
            .into_response();
        }
        Some(first) if !first.is_reserved() => return replayed(first),
        // The first attempt committed; its answer was never kept.
        Some(_) => true,
        None => false,
    };

    parts.extensions.insert(Fingerprint(fingerprint));
    let lead_in_path = lead_of_path(parts.uri.path());
    let creates_lead = parts.method == Method::POST && parts.uri.path() == "/api/leads";
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if response.status().is_server_error() || response.extensions().get::<NotKept>().is_some() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_RESPONSE).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "response too large").into_response();
    };
    if bytes.len() > MAX_KEPT_RESPONSE {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let kept = KeptResponse {
        fingerprint,
        status: parts.status.as_u16(),
        content_type,
        body: bytes.to_vec(),
    };
    // Erasing a lead removes the answers about it: they hold its personal data.
    let lead = lead_in_path.or_else(|| {
        creates_lead
            .then(|| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .flatten()
            .and_then(|created| created["id"].as_str()?.parse().ok())
    });
    if let Err(error) = state.app.keep_response(&token, &key, &kept, lead).await {
        tracing::warn!(%error, "could not keep the response of an idempotent request");
    }
    if replay {
        parts
            .headers
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// The lead a request's path is about (`/api/leads/{id}...`), its id
/// percent-decoded as the router decodes it.
fn lead_of_path(path: &str) -> Option<uuid::Uuid> {
    let segment = path.strip_prefix("/api/leads/")?.split('/').next()?;
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()?
        .parse()
        .ok()
}

/// A kept answer, given again.
fn replayed(kept: KeptResponse) -> Response {
    let status = StatusCode::from_u16(kept.status).unwrap_or(StatusCode::OK);
    let mut response = (status, kept.body).into_response();
    if let Some(value) = kept
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
