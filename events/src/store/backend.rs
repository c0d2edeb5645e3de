//! What the writer asks of a database, and the connection it appends through.
//!
//! The writer (`writer.rs`) decides how a batch is committed; a backend
//! (`sqlite.rs`, `postgres.rs`) only knows how to do each step on its database.
//! The steps:
//! - [`Backend::lock_and_load`] begins a transaction, takes the log's write lock
//!   and reads what the batch needs; every appending transaction of every process
//!   starts so, which is what makes positions commit in order;
//! - then [`Backend::write_and_commit`] writes the batch and commits, or
//!   [`Backend::release`] ends the transaction when every request was refused;
//! - [`Backend::write_alone`] writes a batch planned on what the writer knows
//!   from its own last commit, without taking the lock first: it must write all
//!   or nothing, and nothing when any other append came in between;
//! - [`Backend::abandon`] after any failure: whatever was left open is rolled
//!   back.
//!
//! The writer has a database connection of its own, outside the readers' pool:
//! - a pooled connection is pinged when it is taken and again when it is given back,
//!   which costs a hand-off to SQLite's worker thread (or a round trip to
//!   PostgreSQL) each time;
//! - SQLite drops a connection's whole page cache when it starts a transaction after
//!   another connection wrote. Appends that wandered over the pool's connections
//!   found their cache cold each time and read back every page of every index they
//!   touched (about 70 page reads per command). A connection that only ever sees its
//!   own writes keeps its cache.
//!
//! After a failed batch the connection is closed, which rolls back whatever it left
//! open, and the next batch opens a new one.

use std::future::Future;

use sqlx::ConnectOptions;
use tokio::time::Instant;

use super::plan::{Known, LogState, Needs, Writes};
use super::PING_IDLE_AFTER;
use crate::error::StoreError;

/// Prepared statements kept per connection, on both backends: each table written
/// in bulk has up to seven shapes (see [`super::bulk`]).
pub(crate) const STATEMENT_CACHE: usize = 400;

/// One database's way of doing the writer's steps (see the module documentation).
pub(crate) trait Backend: Send {
    /// Begins a transaction, takes the log's write lock and reads the head and
    /// what `needs` asks that `known` does not hold.
    fn lock_and_load(
        &mut self,
        needs: &Needs,
        known: &mut Known,
    ) -> impl Future<Output = Result<LogState, StoreError>> + Send;

    /// Writes the batch (events, stream versions, idempotency records, chain
    /// heads, log head, then the rows beside the log) in the transaction
    /// [`Backend::lock_and_load`] began, and commits.
    fn write_and_commit(
        &mut self,
        writes: &Writes,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Ends the transaction [`Backend::lock_and_load`] began, having written
    /// nothing.
    fn release(&mut self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Writes and commits a batch with no rows beside the log, planned on a head
    /// read before: all of it when the log head is still there, nothing when it
    /// moved. Answers whether it wrote. It never holds an event's position while
    /// it waits for another append, so two servers' appends cannot deadlock.
    fn write_alone(
        &mut self,
        writes: &Writes,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Rolls back whatever a failed step left open (closing the connection when
    /// it is the writer's own).
    fn abandon(&mut self) -> impl Future<Output = ()> + Send;

    /// Closes the writer's own connection: the store it serves is closed.
    fn close(&mut self);
}

/// A connection opened on first use and again after a failure.
#[derive(Debug)]
pub(crate) struct Own<C: sqlx::Connection> {
    options: <C as sqlx::Connection>::Options,
    live: Option<C>,
    /// When the live connection was last used.
    used: Instant,
}

impl<C: sqlx::Connection> Own<C> {
    pub(crate) fn new(options: <C as sqlx::Connection>::Options) -> Self {
        Self {
            options,
            live: None,
            used: Instant::now(),
        }
    }

    /// The live connection, opened if need be; one that sat idle is pinged first.
    pub(crate) async fn get(&mut self) -> Result<&mut C, StoreError> {
        if self.used.elapsed() >= PING_IDLE_AFTER {
            if let Some(live) = self.live.as_mut() {
                if live.ping().await.is_err() {
                    self.live = None;
                }
            }
        }
        self.used = Instant::now();
        if self.live.is_none() {
            self.live = Some(self.options.connect().await?);
        }
        self.live.as_mut().ok_or(StoreError::Closed)
    }

    /// Closes the connection (rolling back whatever it left open).
    pub(crate) fn close(&mut self) {
        self.live = None;
    }
}
