//! The event store's one error type.

use crate::envelope::{ExpectedVersion, Position, StreamKey};

/// Everything that can go wrong in the event store.
///
/// Rejections of the request (`Conflict`, `StreamNotFound`, the `Invalid*` family) are
/// kept apart from technical failures (`Unavailable`, `Database`, `CorruptEvent`), so
/// that the layers above can map the first to 4xx answers and the second to 5xx.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The stream's version is not what the caller expected (optimistic concurrency).
    #[error("conflict on stream {stream}: expected {expected}, actual version {actual}")]
    Conflict {
        stream: StreamKey,
        expected: ExpectedVersion,
        /// The stream's current version; 0 when it does not exist.
        actual: u64,
    },

    /// The stream does not exist.
    #[error("stream {0} not found")]
    StreamNotFound(StreamKey),

    /// An append with no events: there is nothing to record.
    #[error("an append must carry at least one event")]
    EmptyAppend,

    /// The event type (at that schema version) is not in the catalogue, or does not
    /// belong on that kind of stream.
    #[error("unknown event type {event_type} v{schema_version} for a {stream_type} stream")]
    UnknownEventType {
        event_type: String,
        schema_version: u16,
        stream_type: String,
    },

    /// The payload is not a JSON object.
    #[error("the payload of {event_type} is not a JSON object")]
    InvalidPayload { event_type: String },

    /// An event's payload is larger than the store accepts.
    #[error("the payload of {event_type} is {size} bytes; the limit is {limit}")]
    PayloadTooLarge {
        event_type: String,
        size: usize,
        limit: usize,
    },

    /// The stream belongs to another site than the append says, or one atomic append
    /// names streams of several sites.
    #[error("stream {0} belongs to another site")]
    CrossSite(StreamKey),

    /// The idempotency key was used before for a different append.
    #[error("idempotency key {key:?} was already used for a different append")]
    IdempotencyKeyReused { key: String },

    /// The idempotency key is empty or longer than 255 bytes.
    #[error("an idempotency key must be 1 to 255 bytes long")]
    InvalidIdempotencyKey,

    /// A row written beside the log in the append's transaction (see
    /// [`SideWrite`](crate::store::SideWrite)) was refused: it hit a unique key
    /// (`taken`), or changed another number of rows than it must. Nothing was
    /// appended.
    #[error("the {what} written with this append was refused ({})", if *taken { "already taken" } else { "not in the state it was decided on" })]
    SideWriteRefused { what: &'static str, taken: bool },

    /// A stored event cannot be read back: bad JSON, an unknown type, or a payload that
    /// does not match its type.
    #[error("corrupt event at position {position}: {reason}")]
    CorruptEvent { position: Position, reason: String },

    /// The database cannot be reached (connection refused or lost, pool closed).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),

    /// Any other database failure.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),

    /// Applying the embedded migrations failed.
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),

    /// The database URL is neither `sqlite:` nor `postgres:`.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),

    /// The store's writer has stopped (the store is shutting down).
    #[error("the event store is closed")]
    Closed,

    /// The store holds or must write sealed personal data, and was opened
    /// without the master key.
    #[error("no master key: this store seals leads' personal data; give it the master key file (crm keys generate makes one)")]
    NoMasterKey,

    /// The master key given is not the one this database's lead keys are sealed
    /// with.
    #[error("wrong master key: this database's lead keys are sealed with master key {expected}, the file given holds {given}")]
    WrongMasterKey { expected: String, given: String },

    /// The lead was erased: nothing more can be recorded of it.
    #[error("lead {0} was erased")]
    LeadErased(uuid::Uuid),

    /// A lead's stored key does not open with the master key (altered bytes).
    #[error("the key of lead {0} does not open with the master key")]
    LeadKeyUnreadable(uuid::Uuid),

    /// Sealing failed (no randomness).
    #[error("sealing failed: {0}")]
    Sealing(String),

    /// A projection stopped folding (its fold panicked, or the database refused
    /// its statements): what it holds is not what the log says.
    #[error("projection {name} stopped at position {position}: {reason}")]
    ProjectionStopped {
        name: String,
        position: Position,
        reason: String,
    },
}

impl StoreError {
    pub(crate) fn key(error: crate::digest::KeyError) -> Self {
        Self::Sealing(error.to_string())
    }

    /// Whether the error is a rejection of this request (the caller's to fix) rather
    /// than a failure of the store.
    #[must_use]
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            Self::Conflict { .. }
                | Self::StreamNotFound(_)
                | Self::EmptyAppend
                | Self::UnknownEventType { .. }
                | Self::InvalidPayload { .. }
                | Self::PayloadTooLarge { .. }
                | Self::CrossSite(_)
                | Self::IdempotencyKeyReused { .. }
                | Self::InvalidIdempotencyKey
                | Self::SideWriteRefused { .. }
                | Self::LeadErased(_)
        )
    }

    /// Whether the database refused a write on a unique key; on SQLite this
    /// includes the trigger that refuses an insert colliding with a stored event
    /// (migration 0007), which stands in for the key it guards.
    pub(crate) fn is_unique_violation(&self) -> bool {
        matches!(self, Self::Database(sqlx::Error::Database(e))
            if e.is_unique_violation() || e.message().contains(REPLACE_REFUSED))
    }
}

/// The words of SQLite's refusal of an insert that collides with a stored event
/// (migration 0007's trigger).
const REPLACE_REFUSED: &str = "an insert may not replace a stored event";

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if is_unavailable(&error) {
            Self::Unavailable(error)
        } else {
            Self::Database(error)
        }
    }
}

/// Whether a database error means "cannot reach the database" rather than "the
/// database refused this statement".
fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // PostgreSQL: class 08 (connection exception), 57P01..57P03 (shutdown,
            // crash, cannot connect now). SQLite: SQLITE_CANTOPEN (14).
            code.starts_with("08") || code.starts_with("57P") || code == "14"
        }),
        _ => false,
    }
}
