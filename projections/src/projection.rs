//! The projection abstraction.

use std::fmt;

use crm_events::{DomainEvent, RecordedEvent, StoreError, Tx};
use futures_util::future::BoxFuture;

/// A stored event together with its typed, upcast form (decoded once per batch,
/// shared by every projection).
#[derive(Debug, Clone)]
pub struct Decoded {
    pub recorded: RecordedEvent,
    pub event: DomainEvent,
}

impl Decoded {
    /// Decodes a stored event.
    ///
    /// # Errors
    /// [`StoreError::CorruptEvent`] naming its position.
    pub fn new(recorded: RecordedEvent) -> Result<Self, StoreError> {
        let event = DomainEvent::decode(&recorded)?;
        Ok(Self { recorded, event })
    }
}

/// A pure fold of events into tables of its own.
///
/// `apply` runs inside a transaction that also moves the projection's checkpoint,
/// so each event's effect lands exactly once. It must be deterministic: the same
/// events give the same rows, whether folded as they happen or rebuilt from 0.
pub trait Projection: Send + Sync + fmt::Debug {
    /// Its name in the checkpoint table and on the command line.
    fn name(&self) -> &'static str;

    /// Bumped whenever the fold changes meaning: a projection whose stored version
    /// differs is rebuilt at start.
    fn version(&self) -> i64;

    /// The tables it owns and alone writes (emptied by a rebuild, children first).
    fn tables(&self) -> &'static [&'static str];

    /// The secondary indexes its fold reads by: a rebuild keeps them while it sets
    /// the others aside.
    fn folding_indexes(&self) -> &'static [&'static str] {
        &[]
    }

    /// Whether it reads events of this type (others only move its checkpoint).
    fn reads(&self, event: &DomainEvent) -> bool;

    /// Folds a batch of events it reads, in log order, into its tables. Folding a
    /// batch at once or event by event gives the same rows.
    fn apply<'a>(
        &'a self,
        tx: &'a mut Tx<'_>,
        events: &'a [&'a Decoded],
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// Implements [`Projection::apply`] by folding one event at a time with
/// `$apply(tx, decoded)`: for projections whose events are rare.
macro_rules! event_by_event {
    ($apply:path) => {
        fn apply<'a>(
            &'a self,
            tx: &'a mut crm_events::Tx<'_>,
            events: &'a [&'a crate::projection::Decoded],
        ) -> futures_util::future::BoxFuture<'a, Result<(), crm_events::StoreError>> {
            Box::pin(async move {
                for decoded in events {
                    $apply(tx, decoded).await?;
                }
                Ok(())
            })
        }
    };
}

pub(crate) use event_by_event;
