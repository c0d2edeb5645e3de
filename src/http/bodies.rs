//! Response bodies and their OpenAPI schemas.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use crm_events::Position;
use crm_projections::users::UserRow;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct User {
    pub id: Uuid,
    pub name: String,
    pub email: String,
    /// `owner`, `admin`, `agent` or `auditor`.
    pub role: String,
    pub active: bool,
    pub version: i64,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        Self {
            id: row.id,
            name: row.name,
            email: row.email,
            role: row.role,
            active: row.active,
            version: row.version,
        }
    }
}

/// A row of the users list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ListedUser {
    #[serde(flatten)]
    pub user: User,
    /// Whether the caller may "Log in as user" on this row.
    pub can_impersonate: bool,
    /// Why not, in words, when not ("only agents can be logged in as", "that user
    /// is deactivated", ...).
    pub cannot_impersonate_because: Option<String>,
}

/// An impersonation session with its admin and its agent (the subject) as users.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SessionBody {
    #[serde(flatten)]
    pub session: crm_projections::audit_trail::ImpersonationSession,
    /// Who logged in as the subject.
    pub admin: User,
    /// Whose account was acted as.
    pub subject: User,
}

/// One session, its people, and every change made in it (before -> after).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SessionDetailBody {
    #[serde(flatten)]
    pub session: SessionBody,
    pub changes: Vec<crm_projections::audit_trail::Change>,
    /// What it changed was reverted (once; `POST …/revert`).
    pub reverted: bool,
}

impl From<crate::app::audit::SessionView> for SessionBody {
    fn from(view: crate::app::audit::SessionView) -> Self {
        Self {
            session: view.session,
            admin: User::from(view.admin),
            subject: User::from(view.subject),
        }
    }
}

/// The impersonation a session is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ImpersonationInfo {
    pub id: Uuid,
    pub reason: Option<String>,
    /// `edit`, or `view`: every write is refused (403 `impersonation_read_only`).
    pub mode: String,
    pub started_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Who the requests act as (`user`), who really is signed in (`actor`), and the
/// impersonation in progress, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Me {
    pub user: User,
    pub actor: User,
    pub impersonation: Option<ImpersonationInfo>,
}

/// The answer to a successful sign-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct LoginResponse {
    pub token: String,
    pub me: Me,
}

/// A page of a list.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct List<T> {
    pub items: Vec<T>,
    /// Pass as `?cursor=` for the next page; null at the end.
    pub next_cursor: Option<String>,
}

impl<T> From<crm_projections::Page<T>> for List<T> {
    fn from(page: crm_projections::Page<T>) -> Self {
        Self {
            items: page.items,
            next_cursor: page.next_cursor,
        }
    }
}

/// A body with the write's position (`position` field and `X-Position` header) and,
/// for versioned resources, an `ETag`.
pub fn written<T: Serialize>(
    status: axum::http::StatusCode,
    body: T,
    position: Position,
    version: Option<i64>,
) -> Response {
    let mut value = serde_json::to_value(&body).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        object.insert("position".into(), serde_json::json!(position.0));
    }
    let mut response = (status, Json(value)).into_response();
    position_header(&mut response, position);
    if let Some(version) = version {
        etag(&mut response, version);
    }
    response
}

/// An empty 204 carrying the write's position.
pub fn no_content(position: Position) -> Response {
    let mut response = axum::http::StatusCode::NO_CONTENT.into_response();
    position_header(&mut response, position);
    response
}

/// A versioned resource: the body and its `ETag`.
pub fn versioned<T: Serialize>(body: T, version: i64) -> Response {
    let mut response = Json(body).into_response();
    etag(&mut response, version);
    response
}

fn position_header(response: &mut Response, position: Position) {
    if let Ok(value) = HeaderValue::from_str(&position.0.to_string()) {
        response.headers_mut().insert("x-position", value);
    }
}

fn etag(response: &mut Response, version: i64) {
    if let Ok(value) = HeaderValue::from_str(&format!("\"{version}\"")) {
        response.headers_mut().insert(header::ETAG, value);
    }
}
