//! The API's one error type, answered as `application/problem+json`
//! `{type, title, status, detail, errors?}`. Internal failures are logged with their
//! cause and answered with a generic message.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use crm_events::StoreError;
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppError;
use crate::domain::values::FieldError;

/// A problem report (RFC 9457).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Problem {
    /// One of `unauthenticated`, `forbidden`, `impersonation_forbidden`,
    /// `impersonation_read_only`, `not_found`, `gone`,
    /// `conflict`, `impersonation_ended`, `validation`, `payload_too_large`,
    /// `rate_limited`, `method_not_allowed`, `timeout`, `unavailable`, `internal`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// For `validation`: each bad field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<FieldErrorBody>)]
    pub errors: Vec<FieldError>,
    /// For `impersonation_ended`: how it ended (`returned`, `expired`,
    /// `logged_out`, `revoked`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    /// For `impersonation_ended`: when it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
}

/// One bad field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldErrorBody {
    pub field: String,
    pub message: String,
}

/// An error on its way to becoming a problem response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: String,
    errors: Vec<FieldError>,
    /// For `rate_limited`: the `Retry-After` header, in whole seconds.
    retry_after: Option<u64>,
    /// For `impersonation_ended`: its end reason and time.
    ended: Option<Box<(String, DateTime<Utc>)>>,
}

impl ApiError {
    fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            title,
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
            ended: None,
        }
    }

    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Not signed in",
            detail,
        )
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "Not found",
            format!("{what} not found"),
        )
    }

    /// The path exists, but not with this method (routing's 405).
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Method not allowed",
            "this path does not take this method",
        )
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", "Conflict", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    pub fn timeout(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "Request timeout",
            detail,
        )
    }

    pub fn payload_too_large(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "Payload too large",
            detail,
        )
    }

    /// Bad input, naming each field.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        Self {
            errors,
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Invalid input",
                detail,
            )
        }
    }

    /// Bad input in one field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError::new(field, message)])
    }

    fn internal(error: &dyn std::error::Error) -> Self {
        tracing::error!(%error, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "the request could not be completed",
        )
    }

    fn unavailable(error: &dyn std::error::Error) -> Self {
        tracing::error!(%error, "database unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            "the database cannot be reached; nothing was changed, retry later",
        )
    }

    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<AppError> for ApiError {
    fn from(error: AppError) -> Self {
        match error {
            AppError::Unauthenticated(why) => Self::unauthenticated(why),
            AppError::Forbidden(why) => Self::forbidden(why),
            AppError::ImpersonationForbidden(why) => Self::new(
                StatusCode::FORBIDDEN,
                "impersonation_forbidden",
                "Not allowed while logged in as another user",
                why,
            ),
            AppError::ImpersonationReadOnly(why) => Self::new(
                StatusCode::FORBIDDEN,
                "impersonation_read_only",
                "Read only: this \"Log in as user\" session only views",
                why,
            ),
            AppError::NotFound(what) => Self::not_found(what),
            error @ AppError::Gone(_) => {
                Self::new(StatusCode::GONE, "gone", "Gone", error.to_string())
            }
            AppError::Conflict(why) => Self::conflict(why),
            AppError::Validation(errors) => Self::validation(errors),
            error @ AppError::RateLimited { retry_after_secs } => Self {
                retry_after: Some(retry_after_secs),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "Too many requests",
                    error.to_string(),
                )
            },
            error @ AppError::ImpersonationEnded {
                end_reason,
                ended_at,
            } => Self {
                ended: Some(Box::new((end_reason.to_string(), ended_at))),
                ..Self::new(
                    StatusCode::CONFLICT,
                    "impersonation_ended",
                    "No longer logged in as that user",
                    error.to_string(),
                )
            },
            AppError::Store(store) => store.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match &error {
            StoreError::Unavailable(_) => Self::unavailable(&error),
            StoreError::ProjectionStopped { .. } => {
                tracing::error!(%error, "a read waits on a stopped projection");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "projection_stopped",
                    "Read model stopped",
                    format!(
                        "{error}; writes are still taken, and /healthz shows how far behind it is"
                    ),
                )
            }
            // A row beside the log found in another state than the command was
            // decided on (each command says what that means where it can): the
            // client's to reload and retry, never a server error.
            StoreError::SideWriteRefused { .. } => Self::conflict(error.to_string()),
            _ => Self::internal(&error),
        }
    }
}

impl From<crm_projections::QueryError> for ApiError {
    fn from(error: crm_projections::QueryError) -> Self {
        AppError::from(error).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem {
            kind: self.kind.to_owned(),
            title: self.title.to_owned(),
            status: self.status.as_u16(),
            detail: self.detail,
            errors: self.errors,
            end_reason: self.ended.as_ref().map(|ended| ended.0.clone()),
            ended_at: self.ended.map(|ended| ended.1),
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// What handlers return.
pub type ApiResult<T> = Result<T, ApiError>;
