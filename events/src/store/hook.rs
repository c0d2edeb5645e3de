//! Work that must commit together with an append: the projections fold each batch
//! inside the append's own transaction, so a projection's rows and checkpoint commit
//! with the events (one fsync, exactly-once effect, read-your-writes on return).
//!
//! The event store only knows this interface; the projections implement it.

use std::fmt;

use futures_util::future::BoxFuture;
use sqlx::{PgConnection, SqliteConnection};

use crate::envelope::{Position, RecordedEvent};
use crate::error::StoreError;

/// A connection inside an open transaction, of either backend.
#[derive(Debug)]
pub enum Tx<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

impl Tx<'_> {
    /// `"sqlite"` or `"postgres"`.
    #[must_use]
    pub fn backend_name(&self) -> &'static str {
        match self {
            Tx::Sqlite(_) => "sqlite",
            Tx::Postgres(_) => "postgres",
        }
    }
}

impl<'c> From<&'c mut SqliteConnection> for Tx<'c> {
    fn from(conn: &'c mut SqliteConnection) -> Self {
        Tx::Sqlite(conn)
    }
}

impl<'c> From<&'c mut PgConnection> for Tx<'c> {
    fn from(conn: &'c mut PgConnection) -> Self {
        Tx::Postgres(conn)
    }
}

/// Runs the same code against whichever connection a [`Tx`] holds (compiled once
/// per backend).
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, |$conn:ident| $body:expr) => {
        match $tx {
            $crate::store::Tx::Sqlite($conn) => $body,
            $crate::store::Tx::Postgres($conn) => $body,
        }
    };
}

/// Called by the store's writer for every batch it commits.
pub trait AppendHook: Send + Sync + fmt::Debug {
    /// Runs inside the append transaction, after the batch's events are written and
    /// before the commit. An error rolls the whole batch back.
    fn appended<'a>(
        &'a self,
        tx: &'a mut Tx<'_>,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Called once the transaction has committed, with the batch's last position.
    fn committed(&self, last: Position);
}
