//! The event envelope: what every stored event carries besides its payload, and the
//! types that describe an append (stream, expected version, metadata) and its outcome.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{CorrelationId, EventId, ImpersonationId, SiteId, UserId};

/// The global position of an event: dense (1, 2, 3, ...), and events commit in
/// position order, so a reader that has seen position `p` has seen everything before.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Position(pub i64);

impl Position {
    /// Before the first event: reading "after the start" reads everything.
    pub const START: Position = Position(0);

    /// The position right after this one.
    #[must_use]
    pub const fn next(self) -> Position {
        Position(self.0 + 1)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The kinds of stream (aggregates) the domain has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamType {
    Site,
    User,
    Impersonation,
    Lead,
    Settings,
    /// The leads opened in one impersonation session (the session's id): kept apart
    /// from the session's own stream, whose start and end views never contend with.
    Views,
}

impl StreamType {
    /// Every stream type, in a fixed order.
    pub const ALL: [StreamType; 6] = [
        StreamType::Site,
        StreamType::User,
        StreamType::Impersonation,
        StreamType::Lead,
        StreamType::Settings,
        StreamType::Views,
    ];

    /// The name stored in the `stream_type` column.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            StreamType::Site => "site",
            StreamType::User => "user",
            StreamType::Impersonation => "impersonation",
            StreamType::Lead => "lead",
            StreamType::Settings => "settings",
            StreamType::Views => "views",
        }
    }

    /// The stream type stored under `name`, if there is one.
    #[must_use]
    pub fn parse(name: &str) -> Option<StreamType> {
        StreamType::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl fmt::Display for StreamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Names one stream: its type and id. A user's account and the same user's settings
/// are two streams with the same id and different types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamKey {
    pub stream_type: StreamType,
    pub id: Uuid,
}

impl StreamKey {
    #[must_use]
    pub const fn new(stream_type: StreamType, id: Uuid) -> Self {
        Self { stream_type, id }
    }
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.stream_type, self.id)
    }
}

/// What the caller believes the stream's version is (optimistic concurrency).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "version")]
pub enum ExpectedVersion {
    /// Append whatever the version is.
    Any,
    /// The stream must not exist yet (creating an aggregate).
    NoStream,
    /// The stream must be exactly at this version (1 after its first event).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream at `actual` (0 = does not exist) satisfies this expectation.
    #[must_use]
    pub const fn admits(self, actual: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(v) => v == actual,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// Who did it and why: stored with every event of one append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// The authenticated human who really acted.
    pub actor_id: UserId,
    /// The account the action was performed as; equal to `actor_id` unless impersonating.
    pub subject_id: UserId,
    /// The impersonation session the action happened in, if any.
    pub impersonation_id: Option<ImpersonationId>,
    /// One per request.
    pub correlation_id: CorrelationId,
    /// What caused this append (an earlier event or command), if known.
    pub causation_id: Option<Uuid>,
    /// The client's idempotency key, if it sent one.
    pub idempotency_key: Option<String>,
}

impl Metadata {
    /// Metadata for `actor` acting as themselves, in a new correlation.
    #[must_use]
    pub fn acting_as_self(actor: UserId) -> Self {
        Self {
            actor_id: actor,
            subject_id: actor,
            impersonation_id: None,
            correlation_id: CorrelationId::generate(),
            causation_id: None,
            idempotency_key: None,
        }
    }
}

/// An event about to be appended: its type, schema version and JSON payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub event_type: String,
    pub schema_version: u16,
    /// The payload as JSON text; it must be a JSON object.
    pub payload: String,
}

/// One stream's part of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamAppend {
    pub site_id: SiteId,
    pub stream: StreamKey,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
}

/// What an append did to one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamAppended {
    pub stream: StreamKey,
    pub first_position: Position,
    pub last_position: Position,
    /// The stream's version after the append.
    pub version: u64,
}

/// The result of a successful append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendOutcome {
    /// One entry per stream, in the order they were given.
    pub streams: Vec<StreamAppended>,
    /// The position of the append's last event.
    pub last_position: Position,
    /// True when this is the first result of an earlier append with the same
    /// idempotency key: nothing new was appended.
    pub replayed: bool,
}

/// An event as stored: the whole envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    pub position: Position,
    pub event_id: EventId,
    pub site_id: SiteId,
    pub stream: StreamKey,
    /// The stream's version after this event (1 for a stream's first event).
    pub stream_version: u64,
    pub event_type: String,
    pub schema_version: u16,
    /// The payload as stored (JSON text, at `schema_version`).
    pub payload: String,
    pub actor_id: UserId,
    pub subject_id: UserId,
    pub impersonation_id: Option<ImpersonationId>,
    pub correlation_id: CorrelationId,
    pub causation_id: Option<Uuid>,
    pub idempotency_key: Option<String>,
    /// When the event was recorded, UTC, at microsecond precision.
    pub recorded_at: DateTime<Utc>,
    /// The hash of the site's previous event (zeros for a site's first event).
    pub prev_hash: [u8; 32],
    /// The hash of this event's canonical content and `prev_hash`.
    pub hash: [u8; 32],
}

/// One field's change: its name, the value before and the value after.
/// Change events carry these so the audit trail never has to guess a "before".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub before: serde_json::Value,
    pub after: serde_json::Value,
}

impl FieldChange {
    /// A change of `field` from `before` to `after`.
    pub fn new(
        field: impl Into<String>,
        before: impl Into<serde_json::Value>,
        after: impl Into<serde_json::Value>,
    ) -> Self {
        Self {
            field: field.into(),
            before: before.into(),
            after: after.into(),
        }
    }
}
