//! Extractors that turn requests into validated input, answering problems in our
//! shape: JSON bodies, the signed-in session, `If-Match`, query strings.

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use crm_events::ids::{CorrelationId, UserId};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::AppState;
use crate::app::RequestContext;

/// A JSON body: a JSON object (an array or a scalar is refused, never mapped to
/// fields by position); unknown fields, wrong types and malformed JSON are 422
/// problems naming what is wrong; a body over the limit is 413.
#[derive(Debug, Clone, Copy, Default)]
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::invalid(
                "body",
                "send the body as JSON (Content-Type: application/json)",
            ));
        }
        let bytes = match Bytes::from_request(req, state).await {
            Ok(bytes) => bytes,
            Err(rejection) if rejection.status().as_u16() == 413 => {
                return Err(ApiError::payload_too_large("the body is larger than 1 MiB"))
            }
            Err(rejection) => return Err(ApiError::invalid("body", rejection.body_text())),
        };
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::invalid("body", "the body must be a JSON object"));
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(JsonRejection::JsonDataError(error)) => {
                Err(ApiError::invalid("body", error.body_text()))
            }
            Err(JsonRejection::JsonSyntaxError(error)) => {
                Err(ApiError::invalid("body", error.body_text()))
            }
            Err(other) => Err(ApiError::invalid("body", other.body_text())),
        }
    }
}

/// Whether the request says its body is JSON (`application/json`, or a `+json` type).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|essence| essence.trim().to_ascii_lowercase())
        .is_some_and(|essence| essence == "application/json" || essence.ends_with("+json"))
}

/// The client's address: the peer of the connection, when the server was started
/// with it (`into_make_service_with_connect_info`); none otherwise.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| info.0.ip()),
        ))
    }
}

/// A query string; a bad one is a 422 problem.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(error)) => {
                Err(ApiError::invalid("query", error.body_text()))
            }
            Err(other) => Err(ApiError::invalid("query", other.body_text())),
        }
    }
}

/// The request's correlation id: set by the request-id middleware, one per request.
pub fn correlation_id(parts: &Parts) -> CorrelationId {
    parts
        .extensions
        .get::<CorrelationId>()
        .copied()
        .unwrap_or_else(CorrelationId::generate)
}

/// The bearer token of a request, if it has one. The scheme's name is
/// case-insensitive (RFC 9110, 11.1).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The signed-in session of the request: actor, subject, impersonation, plus the
/// request's correlation id and idempotency key.
#[derive(Debug, Clone)]
pub struct Auth(pub RequestContext);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers).ok_or_else(|| {
            ApiError::unauthenticated("send Authorization: Bearer <token> from POST /api/login")
        })?;
        let key = parts
            .headers
            .get("idempotency-key")
            .map(|v| v.to_str().map(str::to_owned))
            .transpose()
            .map_err(|_| ApiError::invalid("Idempotency-Key", "must be visible ASCII"))?;
        let mut ctx = state
            .app
            .authenticate(token, correlation_id(parts), key)
            .await?;
        ctx.http_request = parts.extensions.get::<Fingerprint>().map(|f| f.0);
        if let Some(claimed) = acting_as(&parts.headers)? {
            state.app.check_acting_as(&ctx, claimed).await?;
        }
        Ok(Self(ctx))
    }
}

/// The SHA-256 of a write sent with an idempotency key (method, path, body), put
/// beside the request by the idempotency layer, for the command to reserve the
/// key with what it appends.
#[derive(Debug, Clone, Copy)]
pub struct Fingerprint(pub [u8; 32]);

/// The user a request says it acts as (`Acting-As: <user id>`), if it says so.
fn acting_as(headers: &HeaderMap) -> Result<Option<UserId>, ApiError> {
    let Some(value) = headers.get("acting-as") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| uuid::Uuid::parse_str(v.trim()).ok())
        .map(|id| Some(UserId::from_uuid(id)))
        .ok_or_else(|| ApiError::invalid("Acting-As", "expected a user id"))
}

/// The version a write expects, from `If-Match: "<version>"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IfMatch(pub Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::IF_MATCH) else {
            return Ok(Self(None));
        };
        value
            .to_str()
            .ok()
            .map(|v| v.trim().trim_start_matches("W/").trim_matches('"'))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|v| Self(Some(v)))
            .ok_or_else(|| {
                ApiError::invalid(
                    "If-Match",
                    "expected a version as given by the ETag, e.g. \"3\"",
                )
            })
    }
}

/// The request's correlation id, for handlers that run before a session exists.
#[derive(Debug, Clone, Copy)]
pub struct Correlation(pub CorrelationId);

impl<S: Send + Sync> FromRequestParts<S> for Correlation {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(correlation_id(parts)))
    }
}

/// Path parameters; one that does not parse (a malformed id) names nothing that
/// exists, so it is a 404 problem.
#[derive(Debug, Clone, Copy)]
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(|_| ApiError::not_found("resource"))
    }
}
