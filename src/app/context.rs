//! The request context every command runs in: who really acts, as whom, in which
//! impersonation session, for which request.

use crm_events::ids::{CorrelationId, ImpersonationId, SiteId, UserId};
use crm_events::Metadata;
use uuid::Uuid;

use crate::domain::policy::Caller;

/// A signed-in request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    pub caller: Caller,
    /// The SHA-256 of the session's token (the token itself is never kept).
    pub session: [u8; 32],
    /// One per request; every event the request appends carries it.
    pub correlation_id: CorrelationId,
    /// The client's idempotency key, if it sent one.
    pub idempotency_key: Option<String>,
    /// With an idempotency key over HTTP: the SHA-256 of the request (method,
    /// path, body). What the request appends then reserves its key for the
    /// session, in the same transaction (see `app::sessions::key_reserved`).
    pub http_request: Option<[u8; 32]>,
}

impl RequestContext {
    #[must_use]
    pub fn site(&self) -> SiteId {
        self.caller.actor.site_id
    }

    #[must_use]
    pub fn actor(&self) -> UserId {
        self.caller.actor.id
    }

    #[must_use]
    pub fn subject(&self) -> UserId {
        self.caller.subject.id
    }

    #[must_use]
    pub fn impersonation(&self) -> Option<ImpersonationId> {
        self.caller.impersonation
    }

    /// The same session for another request.
    #[must_use]
    pub fn for_request(
        mut self,
        correlation_id: CorrelationId,
        idempotency_key: Option<String>,
    ) -> Self {
        self.correlation_id = correlation_id;
        self.idempotency_key = idempotency_key;
        self
    }

    /// The same request acting as the real human (for what the admin does as
    /// themselves while impersonating: signing out, returning to admin).
    #[must_use]
    pub fn as_actor(&self) -> Self {
        Self {
            caller: Caller::as_self(self.caller.actor),
            ..self.clone()
        }
    }

    /// The envelope metadata of what this request appends. The idempotency key is
    /// the signed-in human's own (`<actor id>:<key>`): two users never share one,
    /// nor see each other's results through one.
    #[must_use]
    pub fn metadata(&self) -> Metadata {
        Metadata {
            actor_id: self.actor(),
            subject_id: self.subject(),
            impersonation_id: self.impersonation(),
            correlation_id: self.correlation_id,
            causation_id: None,
            idempotency_key: self
                .idempotency_key
                .as_ref()
                .map(|key| format!("{}:{key}", self.actor())),
        }
    }

    /// A new entity id. With an idempotency key it is derived from the key, so a
    /// retried request names the same entity (and the store recognizes the retry);
    /// without one it is a fresh UUID v7.
    #[must_use]
    pub fn new_id(&self, purpose: &str) -> Uuid {
        match &self.idempotency_key {
            Some(key) => Uuid::new_v5(
                &self.site().as_uuid(),
                format!("{}:{key}:{purpose}", self.actor()).as_bytes(),
            ),
            None => Uuid::now_v7(),
        }
    }
}
