//! Folding: one transaction at a time, with the checkpoints.
//!
//! Every fold is one transaction that locks all the checkpoint rows (in one fixed
//! order), reads them, folds the events after the lowest into every projection
//! that has not folded them, and moves the checkpoints with the rows: a
//! projection's rows and checkpoint commit together, so each event lands exactly
//! once, and two servers (or a server and `crm rebuild`) never fold the same event
//! twice, never race, and never deadlock on each other. A crash loses no fold:
//! what was not folded is in the log, and the next start catches up with it.
//!
//! A projection whose fold panics, or whose statements the database refuses for
//! a reason other than contention or availability, is stopped: its checkpoint
//! stays where it was, the others go on, appends go on, the server's health says
//! which one stopped, where and why, and reads of it answer that they cannot be
//! served. The next start tries it again.

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use crm_events::{on_pool, EventStore, Position, RecordedEvent, StoreError, Tx};
use futures_util::FutureExt;
use tokio::sync::watch;

use crate::projection::{Decoded, Projection};
use crate::sql::{execute, lock_checkpoints_statement};

/// How many events one catch-up transaction reads from the log.
const CATCH_UP_BATCH: u32 = 1_000;

/// What the projector's task and its callers share.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) store: EventStore,
    pub(crate) projections: Vec<Arc<dyn Projection>>,
    /// The position every running projection has folded (as far as this process
    /// knows).
    projected: watch::Sender<Position>,
    /// One fold at a time in this process (the task's, a rebuild's).
    pub(crate) one_at_a_time: tokio::sync::Mutex<()>,
    /// The projections that stopped, and why.
    stopped: Mutex<BTreeMap<&'static str, Stopped>>,
}

/// One projection's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Checkpoint {
    pub name: String,
    pub version: i64,
    pub position: Position,
}

/// A projection that stopped: where its checkpoint stays, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stopped {
    pub position: Position,
    pub reason: String,
}
/// Why a fold did not commit.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The store failed (unreachable, contended, closed): try again later.
    Store(StoreError),
    /// One projection failed in a way that folding again would repeat.
    Projection { name: &'static str, reason: String },
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(error.into())
    }
}

/// Events heard of or read ahead, waiting to be folded: a run of positions
/// without gaps, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Run {
    pub(crate) events: Vec<Decoded>,
}

impl Run {
    /// The last position of the run.
    pub(crate) fn last(&self) -> Option<Position> {
        self.events.last().map(|d| d.recorded.position)
    }

    /// Adds `batch`, keeping the run without gaps: a batch that does not follow
    /// on replaces it (what it held is in the log).
    pub(crate) fn extend(&mut self, batch: Vec<Decoded>) {
        let next = self.last().map(|p| p.0 + 1);
        let first = batch.first().map(|d| d.recorded.position.0);
        if next.is_some() && next != first {
            self.events.clear();
        }
        self.events.extend(batch);
    }

    /// Forgets what is folded.
    pub(crate) fn forget_through(&mut self, position: Position) {
        self.events.retain(|d| d.recorded.position > position);
    }

    /// The events after `from`, when the run holds the one right after it.
    fn after(&self, from: Position) -> Option<&[Decoded]> {
        let at = self
            .events
            .iter()
            .position(|d| d.recorded.position.0 == from.0 + 1)?;
        Some(&self.events[at..])
    }
}

/// What a folder knows between its transactions.
#[derive(Debug, Default)]
pub(crate) struct Folding {
    /// Events to fold, so they need not be read from the log.
    pub(crate) run: Run,
    /// The checkpoints as this folder's last committed transaction left them: a
    /// transaction that finds them so is [undisturbed](Tx::undisturbed), since
    /// every other fold moves them.
    left: Option<HashMap<String, Position>>,
}
impl Core {
    pub(crate) fn new(store: EventStore, projections: Vec<Arc<dyn Projection>>) -> Self {
        Self {
            store,
            projections,
            projected: watch::channel(Position::START).0,
            one_at_a_time: tokio::sync::Mutex::new(()),
            stopped: Mutex::default(),
        }
    }

    pub(crate) fn names(&self) -> Vec<&'static str> {
        self.projections.iter().map(|p| p.name()).collect()
    }

    pub(crate) fn projected(&self) -> Position {
        *self.projected.borrow()
    }

    pub(crate) fn stopped(&self) -> BTreeMap<&'static str, Stopped> {
        self.stopped
            .lock()
            .map(|stopped| stopped.clone())
            .unwrap_or_default()
    }

    /// [`StoreError::ProjectionStopped`] for the first projection (of `read`,
    /// when given) that stopped before `position`: what it holds is not what
    /// the log says.
    pub(crate) fn check_running(
        &self,
        read: Option<&[&str]>,
        position: Position,
    ) -> Result<(), StoreError> {
        match self.stopped().into_iter().find(|(name, stopped)| {
            read.is_none_or(|read| read.contains(name)) && stopped.position < position
        }) {
            Some((name, stopped)) => Err(StoreError::ProjectionStopped {
                name: name.to_owned(),
                position: stopped.position,
                reason: stopped.reason,
            }),
            None => Ok(()),
        }
    }

    /// The projections that have not stopped.
    fn running(&self) -> Vec<&Arc<dyn Projection>> {
        let stopped = self.stopped();
        self.projections
            .iter()
            .filter(|p| !stopped.contains_key(p.name()))
            .collect()
    }

    /// Stops a projection at its checkpoint (see the module documentation).
    fn stop(&self, name: &'static str, position: Position, reason: String) {
        tracing::error!(
            projection = name,
            position = position.0,
            %reason,
            "projection stopped: it no longer folds, and reads answer that they cannot be served until a restart folds it again"
        );
        if let Ok(mut stopped) = self.stopped.lock() {
            stopped.insert(name, Stopped { position, reason });
        }
    }

    pub(crate) async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        let rows: Vec<(String, i64, i64)> = on_pool!(self.store.database(), |pool| sqlx::query_as(
            "SELECT name, version, position FROM projection_checkpoints ORDER BY name"
        )
        .fetch_all(pool)
        .await?);
        Ok(rows
            .into_iter()
            .map(|(name, version, position)| Checkpoint {
                name,
                version,
                position: Position(position),
            })
            .collect())
    }

    /// Creates missing checkpoints; empties the projections whose version changed.
    pub(crate) async fn prepare(&self) -> Result<(), StoreError> {
        let stored: HashMap<String, i64> = self
            .checkpoints()
            .await?
            .into_iter()
            .map(|c| (c.name, c.version))
            .collect();
        let db = self.store.database();
        let mut changed = Vec::new();
        for projection in &self.projections {
            match stored.get(projection.name()) {
                None => {
                    on_pool!(db, |pool| {
                        sqlx::query(
                        "INSERT INTO projection_checkpoints (name, version, position) VALUES ($1, $2, 0) \
                         ON CONFLICT (name) DO NOTHING"
                    )
                    .bind(projection.name())
                    .bind(projection.version())
                    .execute(pool)
                    .await
                    .map(drop)?
                    });
                }
                Some(version) if *version != projection.version() => {
                    changed.push(projection.name())
                }
                Some(_) => {}
            }
        }
        if !changed.is_empty() {
            tracing::info!(projections = ?changed, "projection versions changed: rebuilding them");
            self.reset(&changed).await?;
        }
        Ok(())
    }

    /// Empties the named projections and puts their checkpoints back to 0, in one
    /// transaction. They run again if they had stopped.
    pub(crate) async fn reset(&self, names: &[&str]) -> Result<(), StoreError> {
        let chosen: Vec<&Arc<dyn Projection>> = self
            .projections
            .iter()
            .filter(|p| names.contains(&p.name()))
            .collect();
        let _turn = self.store.write_turn().await;
        on_pool!(self.store.database(), |pool| {
            let mut tx = pool.begin_with(self.begin()).await?;
            let mut locking = Tx::from(&mut *tx);
            lock_checkpoints(&mut locking).await?;
            locking.flush().await?;
            for projection in &chosen {
                for table in projection.tables() {
                    sqlx::query(&format!("DELETE FROM {table}"))
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(
                    "UPDATE projection_checkpoints SET position = 0, version = $1 WHERE name = $2",
                )
                .bind(projection.version())
                .bind(projection.name())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        if let Ok(mut stopped) = self.stopped.lock() {
            stopped.retain(|name, _| !names.contains(name));
        }
        self.projected.send_replace(Position::START);
        Ok(())
    }

    /// Folds everything the projections have not folded (up to `until`, when
    /// given, and then stops rather than chase appends that keep coming);
    /// returns the position reached.
    pub(crate) async fn catch_up(
        &self,
        folding: &mut Folding,
        until: Option<Position>,
        progress: &(dyn Fn(Position) + Sync),
    ) -> Result<Position, StoreError> {
        let one_at_a_time = self.one_at_a_time.lock().await;
        self.catch_up_holding(&one_at_a_time, folding, until, progress)
            .await
    }

    /// [`Core::catch_up`], for a caller that holds the one-at-a-time lock.
    pub(crate) async fn catch_up_holding(
        &self,
        _one_at_a_time: &tokio::sync::MutexGuard<'_, ()>,
        folding: &mut Folding,
        until: Option<Position>,
        progress: &(dyn Fn(Position) + Sync),
    ) -> Result<Position, StoreError> {
        loop {
            match self.fold_once(folding, until).await {
                Ok(Some(last)) => {
                    progress(last);
                    // A long catch-up lets the other tasks on its thread run between
                    // batches (a rebuild's database answers may all be ready at once).
                    tokio::task::yield_now().await;
                }
                Ok(None) => return Ok(self.projected()),
                Err(Failure::Projection { name, reason }) => {
                    let at = self
                        .checkpoints()
                        .await?
                        .into_iter()
                        .find(|c| c.name == name)
                        .map_or(Position::START, |c| c.position);
                    self.stop(name, at, reason);
                    self.publish_lowest().await?;
                }
                Err(Failure::Store(error)) => return Err(error),
            }
        }
    }

    /// Publishes the lowest checkpoint of the running projections.
    async fn publish_lowest(&self) -> Result<(), StoreError> {
        let running: Vec<&str> = self.running().iter().map(|p| p.name()).collect();
        let lowest = self
            .checkpoints()
            .await?
            .into_iter()
            .filter(|c| running.contains(&c.name.as_str()))
            .map(|c| c.position)
            .min()
            .unwrap_or_else(|| self.projected());
        self.set_projected(lowest);
        Ok(())
    }

    /// One fold in one transaction: lock the checkpoints, fold the events after
    /// the lowest running one (from `folding`'s run when it holds them, else
    /// from the log, reading the next batch meanwhile) into every running
    /// projection, move their checkpoints, commit and publish. Returns the
    /// position reached; `None` when there was nothing to fold (up to `until`,
    /// when given).
    async fn fold_once(
        &self,
        folding: &mut Folding,
        until: Option<Position>,
    ) -> Result<Option<Position>, Failure> {
        let running = self.running();
        if running.is_empty() {
            return Ok(None);
        }
        let _turn = self.store.write_turn().await;
        // Every failure, the commit's included, ends below: what this fold cached
        // must not outlive a transaction that did not commit.
        let folded: Result<_, Failure> = on_pool!(self.store.database(), |pool| async {
            let mut tx = pool.begin_with(self.begin()).await?;
            let mut within = Tx::from(&mut *tx);
            let folded = self
                .fold_within(&mut within, &running, folding, until)
                .await;
            let folded = match folded {
                Ok(folded) => within.flush().await.map(|()| folded).map_err(Failure::from),
                Err(failure) => Err(failure),
            };
            match folded {
                Ok(Some(checkpoints)) => {
                    tx.commit().await?;
                    Ok(Some(checkpoints))
                }
                Ok(None) => {
                    tx.rollback().await?;
                    Ok(None)
                }
                Err(failure) => Err(failure),
            }
        }
        .await);
        match folded {
            Ok(Some((last, checkpoints))) => {
                folding.left = Some(checkpoints);
                folding.run.forget_through(last);
                tracing::debug!(position = last.0, "folded");
                self.set_projected(last);
                Ok(Some(last))
            }
            Ok(None) => Ok(None),
            Err(failure) => {
                folding.left = None;
                Err(failure)
            }
        }
    }

    /// [`Core::fold_once`] inside `tx`; the position reached and the checkpoints
    /// as the transaction leaves them.
    async fn fold_within(
        &self,
        tx: &mut Tx<'_>,
        running: &[&Arc<dyn Projection>],
        folding: &mut Folding,
        until: Option<Position>,
    ) -> Result<Option<(Position, HashMap<String, Position>)>, Failure> {
        let mut checkpoints = lock_checkpoints(tx).await?;
        tx.set_undisturbed(folding.left.as_ref() == Some(&checkpoints));
        let at = |name: &str| checkpoints.get(name).copied().unwrap_or(Position::START);
        let from = running
            .iter()
            .map(|p| at(p.name()))
            .min()
            .unwrap_or(Position::START);
        if until.is_some_and(|until| from >= until) {
            self.set_projected(from);
            return Ok(None);
        }
        let from_log = folding.run.after(from).is_none();
        let read = if from_log {
            folding.run = Run::default();
            decode_all(self.store.read_all(from, CATCH_UP_BATCH).await?)?
        } else {
            Vec::new()
        };
        let events: &[Decoded] = if from_log {
            &read
        } else {
            folding.run.after(from).unwrap_or_default()
        };
        let Some(last) = events.last().map(|d| d.recorded.position) else {
            self.set_projected(from);
            return Ok(None);
        };
        // Read the next batch while this one folds, when there is likely more: in a
        // task of its own, so that opening and decoding it run on another thread
        // while this one waits for the database.
        let full = from_log && events.len() >= CATCH_UP_BATCH as usize;
        let read_next = full.then(|| {
            let store = self.store.clone();
            tokio::spawn(async move {
                decode_all(store.read_all(last, CATCH_UP_BATCH).await.ok()?).ok()
            })
        });
        let fold_all = async {
            for projection in running {
                fold(projection.as_ref(), tx, events, at(projection.name())).await?;
            }
            let names: Vec<&str> = running.iter().map(|p| p.name()).collect();
            move_checkpoints(tx, last, &names, self.projections.len())
                .await
                .map_err(Failure::from)
        };
        fold_all.await?;
        // A failed read ahead is only a missed head start: the next fold reads again.
        if let Some(read_next) = read_next {
            if let Ok(Some(next)) = read_next.await {
                folding.run.extend(next);
            }
        }
        for projection in running {
            checkpoints.insert(projection.name().to_owned(), last);
        }
        Ok(Some((last, checkpoints)))
    }

    /// How a transaction that folds begins (one statement, or one round trip).
    /// On SQLite, with the write lock (`IMMEDIATE`), so that it waits for
    /// another process's write rather than fail when it finds its snapshot
    /// outdated on its first write. On PostgreSQL, waiting at most 10 s for a
    /// lock: a projection's table locked by someone else must not hold every
    /// read up for good; the fold gives up, the reads waiting on it answer that
    /// the service is unavailable, and it is tried again.
    fn begin(&self) -> &'static str {
        if self.store.database().backend_name() == "sqlite" {
            "BEGIN IMMEDIATE"
        } else {
            "BEGIN; SET LOCAL lock_timeout = '10s'"
        }
    }

    /// Records what the checkpoints were found to be, under their lock: back
    /// too, when another process emptied a projection (`crm rebuild`).
    fn set_projected(&self, position: Position) {
        self.projected.send_if_modified(|known| {
            let moved = position != *known;
            *known = position;
            moved
        });
    }

    /// The log's head and each projection's checkpoint, as the database has
    /// them now, in one query.
    pub(crate) async fn head_and_checkpoints(
        &self,
    ) -> Result<(Position, HashMap<String, Position>), StoreError> {
        // The log's head row is the store's; reading it here with the
        // checkpoints saves a round trip on every read.
        let rows: Vec<(String, i64)> = on_pool!(self.store.database(), |pool| sqlx::query_as(
            "SELECT name, position FROM projection_checkpoints \
             UNION ALL SELECT '', last_position FROM event_log_head WHERE id = 1"
        )
        .fetch_all(pool)
        .await?);
        let mut checkpoints: HashMap<String, Position> = rows
            .into_iter()
            .map(|(name, position)| (name, Position(position)))
            .collect();
        let head = checkpoints.remove("").unwrap_or(Position::START);
        Ok((head, checkpoints))
    }

    /// The log's head and the lowest checkpoint of the running projections (the
    /// head when none runs).
    pub(crate) async fn head_and_lowest(&self) -> Result<(Position, Position), StoreError> {
        let (head, checkpoints) = self.head_and_checkpoints().await?;
        let lowest = self
            .running()
            .iter()
            .filter_map(|p| checkpoints.get(p.name()).copied())
            .min()
            .unwrap_or(head);
        Ok((head, lowest))
    }
}

async fn lock_checkpoints(tx: &mut Tx<'_>) -> Result<HashMap<String, Position>, StoreError> {
    let lock = lock_checkpoints_statement(tx.is_postgres());
    let rows: Vec<(String, i64, i64)> = tx.fetch_all(lock, &[]).await?;
    Ok(rows
        .into_iter()
        .map(|(name, _, position)| (name, Position(position)))
        .collect())
}

/// Moves the checkpoints of the projections `names` (out of `all`) to `to`.
async fn move_checkpoints(
    tx: &mut Tx<'_>,
    to: Position,
    names: &[&str],
    all: usize,
) -> Result<(), StoreError> {
    if names.len() == all {
        // The usual case: one statement moves them all.
        execute!(
            tx,
            "UPDATE projection_checkpoints SET position = $1 WHERE position < $1",
            to.0
        )?;
        return Ok(());
    }
    for name in names {
        execute!(
            tx,
            "UPDATE projection_checkpoints SET position = $1 WHERE name = $2 AND position < $1",
            to.0,
            *name
        )?;
    }
    Ok(())
}

/// Decodes a batch once for every projection.
pub(crate) fn decode_all(batch: Vec<RecordedEvent>) -> Result<Vec<Decoded>, StoreError> {
    batch.into_iter().map(Decoded::new).collect()
}

/// Folds the events after `checkpoint` that the projection reads. A panic, or a
/// statement the database refuses for a reason of the fold's own, is the
/// projection's failure; anything else is the store's.
async fn fold(
    projection: &dyn Projection,
    tx: &mut Tx<'_>,
    batch: &[Decoded],
    checkpoint: Position,
) -> Result<(), Failure> {
    let unread: Vec<&Decoded> = batch
        .iter()
        .filter(|d| d.recorded.position > checkpoint && projection.reads(&d.event))
        .collect();
    if unread.is_empty() {
        return Ok(());
    }
    let name = projection.name();
    // The call inside the future: a panic while it makes its future is caught
    // too. On SQLite its writes wait to run as one script: run them here, so
    // that a statement refused is known to be this projection's.
    let applied = async {
        projection.apply(tx, &unread).await?;
        tx.flush().await
    };
    match AssertUnwindSafe(applied).catch_unwind().await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) if is_the_folds_own(&error) => Err(Failure::Projection {
            name,
            reason: error.to_string(),
        }),
        Ok(Err(error)) => Err(Failure::Store(error)),
        Err(panic) => Err(Failure::Projection {
            name,
            reason: format!("its fold panicked: {}", panic_message(panic.as_ref())),
        }),
    }
}

/// Whether a fold's error would come again however often it is tried: the
/// database refused a statement for a reason other than contention (a lock, a
/// serialization failure, a busy database) or being out of reach.
fn is_the_folds_own(error: &StoreError) -> bool {
    let StoreError::Database(sqlx::Error::Database(refusal)) = error else {
        return matches!(error, StoreError::CorruptEvent { .. });
    };
    let code = refusal.code().unwrap_or_default();
    // PostgreSQL: 40 (rollback: serialization, deadlock), 53 (resources), 55P03
    // (lock not available), 57 (cancelled, shutting down). SQLite: 5 (busy), 6
    // (locked) and their extended codes (5 + n * 256, 6 + n * 256).
    let contention = code.starts_with("40")
        || code.starts_with("53")
        || code.starts_with("57")
        || code == "55P03"
        || code.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6));
    !contention
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
