//! The application's error type: every rejection a command or a session check can
//! give, apart from technical failures of the store.

use chrono::{DateTime, Utc};
use crm_events::catalog::values::EndReason;
use crm_events::StoreError;

use crate::domain::lead::LeadRejection;
use crate::domain::policy::{ImpersonationRefusal, Refusal};
use crate::domain::settings::SettingsRejection;
use crate::domain::user::UserRejection;
use crate::domain::values::FieldError;

/// Why a command or a request was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No valid session: missing, unknown, expired or ended token; bad credentials.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The caller's role does not allow it.
    #[error("{0}")]
    Forbidden(String),
    /// Allowed to the real human, but not while logged in as someone else.
    #[error("{0}")]
    ImpersonationForbidden(String),
    /// A write in a view-only "Log in as user" session.
    #[error("{0}")]
    ImpersonationReadOnly(String),
    /// The thing does not exist, or is not visible to the caller (never leak existence).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// It was there, and is gone for good (an erased lead).
    #[error("the {0} was erased: nothing more can be recorded of it")]
    Gone(&'static str),
    /// A stale version, a state that does not allow it, or a taken email.
    #[error("{0}")]
    Conflict(String),
    /// Bad input, naming each field.
    #[error("invalid input: {}", .0.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "))]
    Validation(Vec<FieldError>),
    /// The request says it acts as a user (`Acting-As`) whose impersonation has
    /// ended: it is refused rather than applied as the admin.
    #[error(
        "the session is no longer logged in as that user: it ended ({end_reason}) at {ended_at}"
    )]
    ImpersonationEnded {
        end_reason: EndReason,
        ended_at: DateTime<Utc>,
    },
    /// Too many failed sign-ins: try again after `retry_after`.
    #[error("too many failed sign-ins; try again in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// The store failed (database unavailable, corrupt event, ...).
    #[error(transparent)]
    Store(StoreError),
}

impl AppError {
    /// A validation error about one field.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }
}

impl From<StoreError> for AppError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict { actual, .. } => Self::Conflict(format!(
                "the resource changed meanwhile (now at version {actual}); reload and retry"
            )),
            StoreError::IdempotencyKeyReused { key } => Self::Conflict(format!(
                "idempotency key {key:?} was already used for a different request"
            )),
            StoreError::InvalidIdempotencyKey => {
                Self::invalid("Idempotency-Key", "must be 1 to 255 bytes long")
            }
            StoreError::PayloadTooLarge { .. } => Self::invalid("body", error.to_string()),
            StoreError::LeadErased(_) => Self::Gone("lead"),
            other => Self::Store(other),
        }
    }
}

impl From<crm_projections::QueryError> for AppError {
    fn from(error: crm_projections::QueryError) -> Self {
        match error {
            crm_projections::QueryError::BadCursor => Self::invalid("cursor", error.to_string()),
            crm_projections::QueryError::Store(store) => store.into(),
        }
    }
}

impl From<sqlx::Error> for AppError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(StoreError::from(error))
    }
}

impl From<Refusal> for AppError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Forbidden(why) => Self::Forbidden(why),
            Refusal::ImpersonationForbidden(_) => Self::ImpersonationForbidden(refusal.to_string()),
            Refusal::ReadOnly => Self::ImpersonationReadOnly(refusal.to_string()),
        }
    }
}

impl From<ImpersonationRefusal> for AppError {
    fn from(refusal: ImpersonationRefusal) -> Self {
        match refusal {
            ImpersonationRefusal::AlreadyImpersonating => Self::Conflict(refusal.to_string()),
            ImpersonationRefusal::ReasonRequired => Self::invalid("reason", refusal.to_string()),
            _ => Self::Forbidden(refusal.to_string()),
        }
    }
}

impl From<LeadRejection> for AppError {
    fn from(rejection: LeadRejection) -> Self {
        match rejection {
            LeadRejection::Archived => Self::NotFound("lead"),
            LeadRejection::TaskNotFound => Self::NotFound("task"),
            LeadRejection::Erased => Self::Gone("lead"),
        }
    }
}

impl From<SettingsRejection> for AppError {
    fn from(rejection: SettingsRejection) -> Self {
        match rejection {
            SettingsRejection::TemplateNotFound => Self::NotFound("template"),
            stale @ SettingsRejection::Stale { .. } => Self::Conflict(stale.to_string()),
            SettingsRejection::Invalid(why) => Self::invalid("subject", why),
        }
    }
}

impl From<UserRejection> for AppError {
    fn from(rejection: UserRejection) -> Self {
        match rejection {
            UserRejection::OtherSite => Self::NotFound("user"),
            other => Self::Forbidden(other.to_string()),
        }
    }
}
