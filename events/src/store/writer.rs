//! The group-commit writer (see the store's module documentation): it decides how
//! each batch is committed, and a [`Backend`] does the steps on its database.

use std::time::Duration;

use chrono::Utc;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::backend::Backend;
use super::plan::{self, AppendRequest, Known, Needs, Writes};
use super::{advance, stream_version, Commits, Database, Reply};
use crate::envelope::{AppendOutcome, Position};
use crate::error::StoreError;

/// What the writer works with besides its backend.
pub(crate) struct Writer {
    pub db: Database,
    pub head: watch::Sender<Position>,
    pub commits: Commits,
    /// Taken for each batch on SQLite (see [`super::EventStore::write_turn`]).
    pub turns: Option<std::sync::Arc<tokio::sync::Mutex<()>>>,
    pub max_batch: usize,
}

/// The writer task: takes everything that is waiting (up to `max_batch`), commits
/// it as one batch and answers each caller.
pub(crate) async fn run<B: Backend>(
    writer: Writer,
    mut backend: B,
    mut requests: mpsc::Receiver<(AppendRequest, Reply)>,
) {
    let max_batch = writer.max_batch;
    let mut waiting = Vec::with_capacity(max_batch);
    let mut known = Known::default();
    let mut group = 1;
    while requests.recv_many(&mut waiting, max_batch).await > 0 {
        gather(&mut requests, &mut waiting, group.min(max_batch)).await;
        group = waiting.len();
        let (batch, replies): (Vec<_>, Vec<_>) = waiting.drain(..).unzip();
        let results = match writer.commit(&mut backend, &batch, &mut known).await {
            Ok(results) => results,
            Err(error) if batch.len() == 1 => vec![Err(error)],
            Err(error) => {
                tracing::warn!(%error, size = batch.len(), "group commit failed; retrying its appends one by one");
                let mut results = Vec::with_capacity(batch.len());
                for request in &batch {
                    let one = writer
                        .commit(&mut backend, std::slice::from_ref(request), &mut known)
                        .await;
                    results.push(match one {
                        Ok(mut one) => one.pop().unwrap_or(Err(StoreError::Closed)),
                        Err(error) => Err(error),
                    });
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

type Decided = Vec<Result<AppendOutcome, StoreError>>;

impl Writer {
    /// Commits one batch; on success, one result per request. The committed
    /// events are announced to whoever follows the commits, then the head moves.
    async fn commit<B: Backend>(
        &self,
        backend: &mut B,
        batch: &[AppendRequest],
        known: &mut Known,
    ) -> Result<Decided, StoreError> {
        if self.db.is_closed() {
            // The writer's connection is its own, but the store it serves is closed.
            backend.close();
            return Err(sqlx::Error::PoolClosed.into());
        }
        let _turn = match &self.turns {
            Some(turns) => Some(turns.lock().await),
            None => None,
        };
        let decided = match decide_and_write(backend, batch, known).await {
            Ok(decided) => decided,
            Err(error) => {
                backend.abandon().await;
                return Err(self.explained(error, batch).await);
            }
        };
        let (results, writes) = decided;
        if let Some(last) = writes.events.last().map(|e| e.position) {
            let mut events = writes.events;
            for (event, opened) in events.iter_mut().zip(writes.opened) {
                if let Some(opened) = opened {
                    event.payload = opened;
                }
            }
            self.announce(events);
            advance(&self.head, last);
        }
        Ok(results)
    }

    /// Tells the follower of the commits (the projections) of a committed batch.
    /// It must not hold the writer up: when it has fallen that far behind, it
    /// hears of the batch no more than of another process's, and reads it from
    /// the log.
    fn announce(&self, events: Vec<crate::envelope::RecordedEvent>) {
        let follower = self.commits.lock().ok().and_then(|slot| slot.clone());
        if let Some(follower) = follower {
            let _ = follower.try_send(events);
        }
    }

    /// A refusal on a unique key is only possible if something wrote to the log
    /// around this store's bookkeeping; it is reported as the conflict it is.
    async fn explained(&self, error: StoreError, batch: &[AppendRequest]) -> StoreError {
        if !error.is_unique_violation() {
            return error;
        }
        let append = &batch[0].appends[0];
        match stream_version(&self.db, append.stream).await {
            Ok(actual) => StoreError::Conflict {
                stream: append.stream,
                expected: append.expected,
                actual,
            },
            Err(other) => other,
        }
    }
}

/// Decides the batch and writes what it accepts; the results and the writes.
///
/// When the writer knows all the batch needs from its own last commit, and the
/// batch appends events and no rows beside the log (which need the
/// transaction around them), it is planned on that and written on its own, in
/// one statement or script: the write proves the head had not moved, or changes
/// nothing, and then what the writer knew is forgotten and the batch is
/// planned again, the long way, on what is read under the log's lock.
async fn decide_and_write<B: Backend>(
    backend: &mut B,
    batch: &[AppendRequest],
    known: &mut Known,
) -> Result<(Decided, Writes), StoreError> {
    let needs = Needs::of(batch);
    if let Some(state) = known.loaded(&needs) {
        let (results, writes) = plan::plan(batch, state, Utc::now());
        if !writes.events.is_empty() && writes.side.is_empty() {
            if backend.write_alone(&writes).await? {
                known.learn(&writes);
                return Ok((results, writes));
            }
            *known = Known::default();
        }
    }
    let state = backend.lock_and_load(&needs, known).await?;
    let (results, writes) = plan::plan(batch, state, Utc::now());
    if writes.events.is_empty() {
        backend.release().await?;
    } else {
        backend.write_and_commit(&writes).await?;
        known.learn(&writes);
    }
    Ok((results, writes))
}
