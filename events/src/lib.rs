//! # crm-events
//!
//! The foundation of the CRM core: every action is an immutable event, tagged with
//! the actor (the human who acted) and the subject (the account acted as).
//!
//! # Layout
//!
//! - [`ids`]: typed identifiers (`SiteId`, `UserId`, `LeadId`, ...).
//! - [`envelope`]: what every stored event carries (positions, stream, actor,
//!   subject, impersonation, correlation, hash chain) and the append vocabulary
//!   (`ExpectedVersion`, `Metadata`, `NewEvent`, `AppendOutcome`).
//! - [`catalog`]: every event type with its stream type and schema version, and
//!   [`DomainEvent`], their typed form.
//! - [`upcast`]: reading events written at older schema versions.
//! - [`hash`]: the per-site tamper-evident hash chain and its verifier.
//! - [`digest`]: signed, chained digests of each site's log, for outsiders.
//! - [`vault`]: sealing a lead's personal values with a key of its own.
//! - [`database`]: the database behind a store, SQLite or PostgreSQL.
//! - [`store`]: [`EventStore`], on SQLite or PostgreSQL: append (optimistic
//!   concurrency, idempotency, group commit), read, subscribe, verify.
//! - [`schema`]: each crate's migrations ([`schema::LOG`]: the log's tables).
//! - [`testing`] (feature `testing`): fresh databases for tests on both backends.
//!
//! Nothing here knows about HTTP, sessions or projections.

pub mod catalog;
pub mod database;
pub mod digest;
pub mod envelope;
pub mod error;
pub mod hash;
pub mod ids;
pub mod schema;
pub mod store;
pub mod upcast;
pub mod vault;

#[cfg(feature = "testing")]
pub mod testing;

pub use catalog::DomainEvent;
pub use envelope::{
    AppendOutcome, ExpectedVersion, FieldChange, Metadata, NewEvent, Position, RecordedEvent,
    StreamAppend, StreamAppended, StreamKey, StreamType,
};
pub use error::StoreError;
pub use hash::{ChainVerifier, VerifyReport};
pub use store::bulk::{Bind, NullOf, Rows, Updates};
pub use store::{Changes, Database, EventStore, SideWrite, StoreOptions, Tx};
