//! The group-commit writer (see the store's module documentation) and the
//! connection it appends through.
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

use std::time::Duration;

use chrono::Utc;
use sqlx::pool::PoolConnection;
use sqlx::{ConnectOptions, PgConnection, Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::plan::{self, AppendRequest, Known, LogState, Needs, Writes};
use super::{
    advance, postgres, sqlite, stream_version, AppendHook, Database, HookSlot, Reply,
    PING_IDLE_AFTER,
};
use crate::envelope::{AppendOutcome, Position};
use crate::error::StoreError;

/// The connection the writer appends through.
#[derive(Debug)]
pub(crate) enum Connection {
    /// Taken from the pool for each batch: an in-memory SQLite database exists only
    /// in its pool's one connection.
    SqlitePool(SqlitePool),
    Sqlite(Own<SqliteConnection>),
    Postgres(Own<PgConnection>),
}

/// A connection opened on first use and again after a failure.
#[derive(Debug)]
pub(crate) struct Own<C: sqlx::Connection> {
    options: <C as sqlx::Connection>::Options,
    live: Option<C>,
    /// What the live connection last saw of other connections' commits (SQLite's
    /// `data_version`), after its last successful batch.
    seen: Option<i64>,
    /// When the live connection last finished a batch.
    used: Instant,
}

impl<C: sqlx::Connection> Own<C> {
    pub(crate) fn new(options: <C as sqlx::Connection>::Options) -> Self {
        Self {
            options,
            live: None,
            seen: None,
            used: Instant::now(),
        }
    }

    /// The live connection (opened if need be) and what it last saw.
    async fn get(&mut self) -> Result<(&mut C, &mut Option<i64>), StoreError> {
        if self.used.elapsed() >= PING_IDLE_AFTER {
            if let Some(live) = self.live.as_mut() {
                if live.ping().await.is_err() {
                    self.live = None;
                }
            }
        }
        if self.live.is_none() {
            self.seen = None;
            self.live = Some(self.options.connect().await?);
        }
        let live = self.live.as_mut().ok_or(StoreError::Closed)?;
        Ok((live, &mut self.seen))
    }

    /// Keeps the connection after a success; closes it after a failure.
    fn keep_if<T>(&mut self, result: &Result<T, StoreError>) {
        self.used = Instant::now();
        if result.is_err() {
            self.close();
        }
    }

    /// Closes the connection (rolling back whatever it left open).
    fn close(&mut self) {
        self.live = None;
        self.seen = None;
    }
}

/// The writer task: takes everything that is waiting (up to `max_batch`), commits
/// it as one batch and answers each caller.
pub(crate) async fn run(
    db: Database,
    mut connection: Connection,
    hook: HookSlot,
    mut requests: mpsc::Receiver<(AppendRequest, Reply)>,
    head: watch::Sender<Position>,
    max_batch: usize,
) {
    let mut waiting = Vec::with_capacity(max_batch);
    let mut known = Known::default();
    let mut group = 1;
    while requests.recv_many(&mut waiting, max_batch).await > 0 {
        gather(&mut requests, &mut waiting, group.min(max_batch)).await;
        group = waiting.len();
        let (batch, replies): (Vec<_>, Vec<_>) = waiting.drain(..).unzip();
        let hook = hook
            .read()
            .ok()
            .and_then(|slot| slot.as_ref().and_then(std::sync::Weak::upgrade));
        let hook = hook.as_deref();
        let results = match commit(&db, &mut connection, hook, &batch, &head, &mut known).await {
            Ok(results) => results,
            Err(error) if batch.len() == 1 => vec![Err(error)],
            Err(error) => {
                tracing::warn!(%error, size = batch.len(), "group commit failed; retrying its appends one by one");
                let mut results = Vec::with_capacity(batch.len());
                for request in &batch {
                    results.push(
                        match commit(
                            &db,
                            &mut connection,
                            hook,
                            std::slice::from_ref(request),
                            &head,
                            &mut known,
                        )
                        .await
                        {
                            Ok(mut one) => one.pop().unwrap_or(Err(StoreError::Closed)),
                            Err(error) => Err(error),
                        },
                    );
                }
                results
            }
        };
        for (reply, result) in replies.into_iter().zip(results) {
            // A caller that stopped waiting has gone; its append stands all the same.
            let _ = reply.send(result);
        }
    }
}

/// How long the writer waits, at most, for the rest of a group of callers.
const LINGER: Duration = Duration::from_micros(500);

/// Waits (up to [`LINGER`]) until `group` requests are waiting: as many as the last
/// batch held. Concurrent callers come back with their next request at about the
/// same time, but not all at once; without the wait, a batch of fifteen would be
/// followed by a batch of the one that came a moment late, which costs a whole
/// commit of its own. A lone caller (a group of one) never waits; when a group
/// shrinks, one batch waits in vain and the next expects the smaller group.
async fn gather(
    requests: &mut mpsc::Receiver<(AppendRequest, Reply)>,
    waiting: &mut Vec<(AppendRequest, Reply)>,
    group: usize,
) {
    let until = Instant::now() + LINGER;
    while waiting.len() < group {
        match tokio::time::timeout_at(until, requests.recv()).await {
            Ok(Some(request)) => waiting.push(request),
            Ok(None) | Err(_) => return,
        }
    }
}

/// Commits one batch; on success, one result per request.
async fn commit(
    db: &Database,
    connection: &mut Connection,
    hook: Option<&dyn AppendHook>,
    batch: &[AppendRequest],
    head: &watch::Sender<Position>,
    known: &mut Known,
) -> Result<Vec<Result<AppendOutcome, StoreError>>, StoreError> {
    if db.is_closed() {
        // The writer's connection is its own, but the store it serves is closed.
        match connection {
            Connection::SqlitePool(_) => {}
            Connection::Sqlite(own) => own.close(),
            Connection::Postgres(own) => own.close(),
        }
        return Err(sqlx::Error::PoolClosed.into());
    }
    let needs = Needs::of(batch);
    let mut results = Vec::new();
    let plan = |loaded| {
        let (decided, writes) = plan::plan(batch, loaded, Utc::now());
        results = decided;
        writes
    };
    let last = match connection {
        Connection::SqlitePool(pool) => {
            let mut conn: PoolConnection<Sqlite> = pool.acquire().await?;
            // Shared with everyone: never undisturbed.
            sqlite::commit_batch(&mut conn, &mut None, &needs, known, plan, hook).await
        }
        Connection::Sqlite(own) => {
            let last = match own.get().await {
                Ok((conn, seen)) => {
                    sqlite::commit_batch(conn, seen, &needs, known, plan, hook).await
                }
                Err(error) => Err(error),
            };
            own.keep_if(&last);
            last
        }
        Connection::Postgres(own) => {
            let last = match own.get().await {
                Ok((conn, _)) => postgres::commit_batch(conn, &needs, known, plan, hook).await,
                Err(error) => Err(error),
            };
            own.keep_if(&last);
            last
        }
    };
    if last.is_err() {
        if let Some(hook) = hook {
            hook.failed();
        }
    }
    match last {
        Ok(last) => {
            if let Some(hook) = hook {
                hook.committed(last);
            }
            advance(head, last);
            Ok(results)
        }
        Err(error) if error.is_unique_violation() => {
            // Only possible if something wrote to the log around this store's
            // bookkeeping; report it as the conflict it is.
            let append = &batch[0].appends[0];
            Err(StoreError::Conflict {
                stream: append.stream,
                expected: append.expected,
                actual: stream_version(db, append.stream).await?,
            })
        }
        Err(other) => Err(other),
    }
}

/// The batch planned on what the writer knows from its own last commit, when it may
/// commit on its own, without a transaction around it: the writer knows all it
/// needs, the batch appends something, and the hook leaves its fold for later.
/// (Otherwise the batch is planned again once the log is locked.)
pub(crate) fn plan_alone(
    known: &Known,
    needs: &Needs,
    plan: &mut impl FnMut(LogState) -> Writes,
    hook: Option<&dyn AppendHook>,
) -> Option<Writes> {
    let writes = plan(known.loaded(needs)?);
    // Rows beside the log need the transaction around them.
    let alone = !writes.events.is_empty()
        && writes.side.is_empty()
        && hook.is_none_or(|h| h.defers(writes.events.len()));
    alone.then_some(writes)
}

/// What became of a batch written on its own (see [`plan_alone`]): its head once
/// committed; `None` when another process's append came first (the write found
/// the head moved, or the position taken, and changed nothing; what the writer
/// knew is forgotten, and the batch goes the long way); any other failure as it
/// is.
pub(crate) fn committed_alone(
    written: Result<bool, StoreError>,
    writes: &Writes,
    known: &mut Known,
    hook: Option<&dyn AppendHook>,
) -> Result<Option<Position>, StoreError> {
    match written {
        Ok(true) => {
            known.learn(writes);
            if let Some(hook) = hook {
                hook.noted(&writes.events);
            }
            Ok(Some(writes.head))
        }
        Ok(false) => {
            *known = Known::default();
            Ok(None)
        }
        Err(error) if error.is_unique_violation() => {
            *known = Known::default();
            Ok(None)
        }
        Err(other) => Err(other),
    }
}
