//! Running the projections: with the appends, catching up, rebuilding.
//!
//! The [`Projector`] is installed as the event store's append hook. It folds this
//! process's appends in runs: an append is acknowledged as soon as its events
//! commit, and its fold is owed until the append that would owe
//! [`OWED_AT_MOST`] events folds them all inside its own transaction (rows,
//! checkpoints and that append's events commit together), or until appends stop
//! for a moment and the follower folds them. One fold then serves many appends: a
//! lead edited ten times is written once, the checkpoints are moved once, and the
//! writes go in multi-row statements. Every read first [settles](Projector::settle)
//! the projections with what was committed before it, so a read made after a
//! write was acknowledged reflects it, on any server. A projection that is behind
//! (new, rebuilt, or a changed version) is brought up by [`Projector::catch_up`],
//! which folds the log in batches, each in one transaction with its checkpoint.
//! A crash loses no fold: what was owed is in the log, and the next start catches
//! up with it.
//!
//! Every transaction that folds events (or empties a projection) first locks all
//! the checkpoint rows, in one fixed order, then reads them, so two servers (or a
//! server and `crm rebuild`) never fold the same event twice, never race, and never
//! deadlock on each other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crm_events::{on_pool, EventStore, Position, RecordedEvent, StoreError, Tx};
use futures_util::future::BoxFuture;
use tokio::sync::watch;

use crate::projection::{Decoded, Projection};
use crate::sql::{execute, lock_checkpoints_statement};

/// How many events one catch-up transaction folds.
const CATCH_UP_BATCH: u32 = 1_000;

/// How long the follower waits for an inline fold that is committing to be
/// published before it looks at the database itself.
const INLINE_PUBLISH_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// At most this many events of this process's appends wait to be folded: the
/// append that would owe more folds them all, inside its own transaction. With
/// 16 writers at 1,000,000 events, 1,024 rather than 256 took a batch of fifteen
/// from 1.5 to 1.2 ms; a read that finds that many owed folds them first (a few
/// tens of milliseconds), which happens only while appends never pause.
const OWED_AT_MOST: usize = 1024;

/// How long the follower lets owed events wait once appends stop coming.
const OWED_IDLE: std::time::Duration = std::time::Duration::from_millis(2);

/// A batch of the log read (and decoded) ahead of its turn: the events after
/// `after`.
struct ReadAhead {
    after: Position,
    events: Vec<Decoded>,
}

/// Runs a set of projections against one store.
#[derive(Debug)]
pub struct Projector {
    store: EventStore,
    projections: Vec<Arc<dyn Projection>>,
    /// The position every projection has folded (as far as this process knows).
    projected: watch::Sender<Position>,
    /// Set by an inline fold, published once its transaction commits.
    pending: Mutex<Option<Position>>,
    /// One catch-up at a time in this process.
    catching_up: tokio::sync::Mutex<()>,
    /// The checkpoints as the last inline fold left them, good for the next one if
    /// it is [undisturbed](Tx::undisturbed): it need not read them back.
    cached_checkpoints: Mutex<Option<HashMap<String, Position>>>,
    /// This process's appends that are committed and not folded yet.
    owed: Mutex<Owed>,
    /// Whether the writer has a batch in flight that the hook has been told of
    /// and whose commit it has not heard of yet.
    noting: watch::Sender<bool>,
}

/// Appends of this process's writer left for a later fold, so that one fold (and
/// one write of each row it touches) serves many appends.
#[derive(Debug, Default)]
struct Owed {
    /// Committed and not folded yet, oldest first, without gaps.
    committed: Vec<Decoded>,
    /// What `committed` becomes when the append in progress commits.
    staged: Option<Vec<Decoded>>,
}

/// One projection's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Checkpoint {
    pub name: String,
    pub version: i64,
    pub position: Position,
}

impl Projector {
    /// Prepares the projections (rebuilding those whose version changed), installs
    /// them as the store's append hook and catches them up with the log.
    ///
    /// # Errors
    /// Store failures; a projection that cannot fold an event.
    pub async fn start(
        store: EventStore,
        projections: Vec<Arc<dyn Projection>>,
    ) -> Result<Arc<Self>, StoreError> {
        let projector = Self::open(store.clone(), projections).await?;
        let hook: Arc<dyn crm_events::AppendHook> = projector.clone();
        store.install_hook(&hook);
        projector.catch_up(&|_| {}).await?;
        tokio::spawn(follow(Arc::downgrade(&projector), store.watch_head()));
        Ok(projector)
    }

    /// Prepares the projections (rebuilding those whose version changed) without
    /// folding anything: for tools that only rebuild or inspect them.
    ///
    /// # Errors
    /// Store failures.
    pub async fn open(
        store: EventStore,
        projections: Vec<Arc<dyn Projection>>,
    ) -> Result<Arc<Self>, StoreError> {
        crate::SCHEMA.apply(store.database()).await?;
        let projector = Arc::new(Self {
            store,
            projections,
            projected: watch::channel(Position::START).0,
            pending: Mutex::new(None),
            catching_up: tokio::sync::Mutex::new(()),
            cached_checkpoints: Mutex::new(None),
            owed: Mutex::default(),
            noting: watch::channel(false).0,
        });
        projector.prepare().await?;
        // Indexes a rebuild set aside and did not live to create again.
        crate::indexes::restore(projector.store.database()).await?;
        Ok(projector)
    }

    /// The names of the projections, in folding order.
    #[must_use]
    pub fn names(&self) -> Vec<&'static str> {
        self.projections.iter().map(|p| p.name()).collect()
    }

    /// The position every projection has folded, as far as this process knows.
    #[must_use]
    pub fn projected(&self) -> Position {
        *self.projected.borrow()
    }

    /// Returns once every projection has folded `position`: at once when they
    /// have, else after catching up (up to it).
    ///
    /// # Errors
    /// Store failures while catching up.
    pub async fn wait_for(self: &Arc<Self>, position: Position) -> Result<(), StoreError> {
        if self.projected() < position {
            self.catch_up_to_whatever_the_caller_does(position).await?;
        }
        Ok(())
    }

    /// [`Projector::catch_up_to`] in a task of its own, awaited: a caller that
    /// stops waiting (a request cancelled halfway, a client gone) cannot stop it
    /// inside one of its transactions. (A transaction whose future is dropped
    /// while it begins is never rolled back, and its connection goes back to the
    /// pool still in it, holding the checkpoints' locks.)
    async fn catch_up_to_whatever_the_caller_does(
        self: &Arc<Self>,
        position: Position,
    ) -> Result<Position, StoreError> {
        let projector = Arc::clone(self);
        tokio::spawn(async move { projector.catch_up_to(position).await })
            .await
            .map_err(|_| StoreError::Closed)?
    }

    /// Returns once every projection has folded every append committed before it
    /// was called, by any process: this process's writer acknowledges appends
    /// before it folds them (see [`OWED_AT_MOST`]), and so may another server's.
    /// Every read starts with it, so a read made after a write was acknowledged
    /// reflects it, on any server.
    ///
    /// # Errors
    /// Store failures while catching up.
    pub async fn settle(self: &Arc<Self>) -> Result<(), StoreError> {
        let head = self.store.head().await?;
        if self.projected() < head && !self.already_folded(head).await {
            self.catch_up_to_whatever_the_caller_does(head).await?;
        }
        Ok(())
    }

    /// The last position this process appended and has not folded.
    fn owed_through(&self) -> Option<Position> {
        let owed = self.owed.lock().ok()?;
        let last = owed.committed.last()?.recorded.position;
        (last > self.projected()).then_some(last)
    }

    /// Whether this process's own appends, to be folded by a later append (or
    /// when appends stop), account for everything between what is projected and
    /// `position`.
    fn owes_up_to(&self, position: Position) -> bool {
        let Ok(owed) = self.owed.lock() else {
            return false;
        };
        match (owed.committed.first(), owed.committed.last()) {
            (Some(first), Some(last)) => {
                first.recorded.position.0 <= self.projected().0 + 1
                    && last.recorded.position >= position
            }
            _ => false,
        }
    }

    /// [`Projector::owes_up_to`], once this process's writer has finished the
    /// batch it has in flight, if any (waiting briefly). On PostgreSQL an append's
    /// notification can come back before its writer has told the hook it
    /// committed: without the wait, the follower would fold the run at once, on
    /// another connection, for every append.
    async fn owes_up_to_once_noted(&self, position: Position) -> bool {
        if self.owes_up_to(position) {
            return true;
        }
        let mut noting = self.noting.subscribe();
        if !*noting.borrow_and_update() {
            return false;
        }
        let _ = tokio::time::timeout(INLINE_PUBLISH_WAIT, noting.wait_for(|busy| !*busy)).await;
        self.owes_up_to(position)
    }

    /// Each projection's checkpoint.
    ///
    /// # Errors
    /// Store failures.
    pub async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
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

    /// Whether a fold of this process's writer that reaches `position` is about to
    /// be published: it was made inline, and its transaction is committing. Then
    /// waits (briefly) for it. An append is heard of (on PostgreSQL, by its
    /// notification) as soon as it commits, a moment before its writer publishes;
    /// waiting here costs nothing, where asking the database cost a query on
    /// another connection per append. A fold whose commit failed never publishes:
    /// the wait then ends on its own and the caller looks further.
    async fn folding_inline(&self, position: Position) -> bool {
        let committing = self.pending.lock().ok().and_then(|pending| *pending);
        if committing.is_none_or(|pending| pending < position) {
            return false;
        }
        let mut projected = self.projected.subscribe();
        tokio::time::timeout(
            INLINE_PUBLISH_WAIT,
            projected.wait_for(|reached| *reached >= position),
        )
        .await
        .is_ok_and(|waited| waited.is_ok())
    }

    /// Whether every projection's committed checkpoint has reached `position`
    /// (then publishes it). An append of this process is heard of (on PostgreSQL,
    /// by its notification) as soon as it commits, which can be a moment before
    /// its writer publishes the fold it made inline: a look at the checkpoints,
    /// without locking them, saves a catch-up that would find nothing to do and
    /// hold the checkpoints' locks while the next append waits for them.
    async fn already_folded(&self, position: Position) -> bool {
        let Ok(checkpoints) = self.checkpoints().await else {
            return false;
        };
        let ours = checkpoints
            .iter()
            .filter(|c| self.projections.iter().any(|p| p.name() == c.name));
        let lowest = ours.map(|c| c.position).min().unwrap_or(Position::START);
        if lowest < position {
            return false;
        }
        self.publish(lowest);
        true
    }

    /// Creates missing checkpoints; empties the projections whose version changed.
    async fn prepare(&self) -> Result<(), StoreError> {
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
    /// transaction.
    async fn reset(&self, names: &[&str]) -> Result<(), StoreError> {
        let chosen: Vec<&Arc<dyn Projection>> = self
            .projections
            .iter()
            .filter(|p| names.contains(&p.name()))
            .collect();
        on_pool!(self.store.database(), |pool| {
            let mut tx = pool.begin().await?;
            let mut locking = Tx::from(&mut *tx);
            self.lock_checkpoints(&mut locking).await?;
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
        self.projected.send_replace(Position::START);
        Ok(())
    }

    /// The named projections, checked: all of them when `names` is empty.
    ///
    /// # Errors
    /// A message naming an unknown projection and listing the known ones.
    pub fn resolve(&self, names: &[&str]) -> Result<Vec<&'static str>, String> {
        let all = self.names();
        if names.is_empty() {
            return Ok(all);
        }
        names
            .iter()
            .map(|name| {
                all.iter().copied().find(|n| n == name).ok_or_else(|| {
                    format!(
                        "no projection named {name:?} (there are: {})",
                        all.join(", ")
                    )
                })
            })
            .collect()
    }

    /// Empties the named projections (see [`Projector::resolve`]) and folds the whole
    /// log into them again, calling `progress` after each batch. Their secondary
    /// indexes are set aside meanwhile and built once at the end. Stopping it at any
    /// moment leaves consistent projections that the next start (or rebuild)
    /// finishes, and creates the indexes again. This process's follower waits
    /// meanwhile: the rebuild folds (and reports) every batch itself.
    ///
    /// # Errors
    /// Store failures; a projection that cannot fold an event.
    pub async fn rebuild(
        &self,
        names: &[&'static str],
        progress: &(dyn Fn(Position) + Sync),
    ) -> Result<Position, StoreError> {
        let one_at_a_time = self.catching_up.lock().await;
        self.reset(names).await?;
        let chosen = || {
            self.projections
                .iter()
                .filter(|p| names.contains(&p.name()))
        };
        let tables: Vec<&str> = chosen().flat_map(|p| p.tables().iter().copied()).collect();
        let folding: Vec<&str> = chosen()
            .flat_map(|p| p.folding_indexes().iter().copied())
            .collect();
        crate::indexes::defer(self.store.database(), &tables, &folding).await?;
        let reached = self
            .catch_up_holding(&one_at_a_time, None, progress)
            .await?;
        crate::indexes::restore(self.store.database()).await?;
        Ok(reached)
    }

    /// Folds everything the projections have not folded yet, in batches of one
    /// transaction each; returns the position reached. While a batch folds, the
    /// next one is read (on another connection), so reading the log and writing
    /// the projections overlap.
    ///
    /// # Errors
    /// Store failures; a projection that cannot fold an event.
    pub async fn catch_up(
        &self,
        progress: &(dyn Fn(Position) + Sync),
    ) -> Result<Position, StoreError> {
        let one_at_a_time = self.catching_up.lock().await;
        self.catch_up_holding(&one_at_a_time, None, progress).await
    }

    /// Folds at least up to `position`, and stops there, rather than chase appends
    /// that keep coming (this process's writer folds its own; a read waits only for
    /// what was committed before it).
    async fn catch_up_to(&self, position: Position) -> Result<Position, StoreError> {
        let one_at_a_time = self.catching_up.lock().await;
        self.catch_up_holding(&one_at_a_time, Some(position), &|_| {})
            .await
    }

    /// [`Projector::catch_up`] (up to `until`, when given), for a caller that
    /// holds the one-at-a-time lock.
    async fn catch_up_holding(
        &self,
        _one_at_a_time: &tokio::sync::MutexGuard<'_, ()>,
        until: Option<Position>,
        progress: &(dyn Fn(Position) + Sync),
    ) -> Result<Position, StoreError> {
        let mut ahead: Option<ReadAhead> = None;
        loop {
            if until.is_some_and(|until| self.projected() >= until) {
                return Ok(self.projected());
            }
            let folded = on_pool!(self.store.database(), |pool| {
                let mut tx = pool.begin().await?;
                let mut folding = Tx::from(&mut *tx);
                let folded = self.fold_next_batch(&mut folding, &mut ahead).await?;
                folding.flush().await?;
                match folded {
                    Some(_) => tx.commit().await?,
                    None => tx.rollback().await?,
                }
                folded
            });
            match folded {
                Some(last) => {
                    tracing::debug!(position = last.0, "caught up a batch");
                    self.publish(last);
                    progress(last);
                    // A long catch-up lets the other tasks on its thread run between
                    // batches (a rebuild's database answers may all be ready at once).
                    tokio::task::yield_now().await;
                }
                None => return Ok(self.projected()),
            }
        }
    }

    /// One catch-up step inside `tx`: lock the checkpoints, fold the next batch
    /// (the one read ahead, if it starts at the right place) while reading the one
    /// after it into `ahead`.
    async fn fold_next_batch(
        &self,
        tx: &mut Tx<'_>,
        ahead: &mut Option<ReadAhead>,
    ) -> Result<Option<Position>, StoreError> {
        let checkpoints = self.lock_checkpoints(tx).await?;
        let from = checkpoints
            .values()
            .copied()
            .min()
            .unwrap_or(Position::START);
        let decoded = match ahead.take() {
            // An empty batch read ahead may be out of date: the log may have moved.
            Some(ReadAhead { after, events }) if after == from && !events.is_empty() => events,
            _ => decode_all(self.store.read_all(from, CATCH_UP_BATCH).await?)?,
        };
        let Some(last) = decoded.last().map(|d| d.recorded.position) else {
            self.publish(from);
            return Ok(None);
        };
        let fold_all = async {
            for projection in &self.projections {
                let at = checkpoints
                    .get(projection.name())
                    .copied()
                    .unwrap_or(Position::START);
                fold(projection.as_ref(), tx, &decoded, at).await?;
            }
            self.move_checkpoints(tx, last, None).await
        };
        let read_next = async { decode_all(self.store.read_all(last, CATCH_UP_BATCH).await?) };
        let (folded, next) = futures_util::future::join(fold_all, read_next).await;
        folded?;
        // A failed read ahead is only a missed head start: the next step reads again.
        *ahead = next.ok().map(|events| ReadAhead {
            after: last,
            events,
        });
        Ok(Some(last))
    }

    async fn lock_checkpoints(
        &self,
        tx: &mut Tx<'_>,
    ) -> Result<HashMap<String, Position>, StoreError> {
        let lock = lock_checkpoints_statement(tx.is_postgres());
        let rows: Vec<(String, i64, i64)> = tx.fetch_all(lock, &[]).await?;
        Ok(rows
            .into_iter()
            .map(|(name, _, position)| (name, Position(position)))
            .collect())
    }

    /// Moves the checkpoints of `only` (all projections when `None`) to `to`.
    async fn move_checkpoints(
        &self,
        tx: &mut Tx<'_>,
        to: Position,
        only: Option<&[&str]>,
    ) -> Result<(), StoreError> {
        let names: Vec<&str> = self
            .projections
            .iter()
            .map(|p| p.name())
            .filter(|name| only.is_none_or(|chosen| chosen.contains(name)))
            .collect();
        if names.len() == self.projections.len() {
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
                name
            )?;
        }
        Ok(())
    }

    fn publish(&self, position: Position) {
        self.projected.send_if_modified(|known| {
            let moved = position > *known;
            if moved {
                *known = position;
            }
            moved
        });
    }

    /// Remembers `position` to publish when the current transaction commits. (A
    /// catch-up commits right after; an inline fold in [`AppendHook::committed`].)
    fn publish_after_commit(&self, position: Position) {
        if let Ok(mut pending) = self.pending.lock() {
            *pending = Some(position);
        }
    }
}

/// Catches up whenever the log moves past what the projections hold: appends of
/// another process, ones this process could not fold with its appends, and runs
/// of this process's appends still owed once appends pause. Ends when the
/// projector is dropped.
async fn follow(projector: std::sync::Weak<Projector>, mut head: watch::Receiver<Position>) {
    loop {
        // Woken by every append heard of; once a second, ask the database (another
        // SQLite process's appends are heard of no other way). While this process
        // owes folds, a moment without appends is the time to make them.
        let idle = match projector.upgrade() {
            Some(projector) if projector.owed_through().is_some() => OWED_IDLE,
            Some(_) => std::time::Duration::from_secs(1),
            None => return,
        };
        let woken = tokio::time::timeout(idle, head.changed()).await;
        let Some(projector) = projector.upgrade() else {
            return;
        };
        let known = match woken {
            Ok(Ok(())) => *head.borrow_and_update(),
            Ok(Err(_)) => return,
            Err(_) => projector
                .store
                .head()
                .await
                .unwrap_or(Position::START)
                .max(projector.owed_through().unwrap_or(Position::START)),
        };
        let owed_by_appends = match woken {
            Ok(_) => projector.owes_up_to_once_noted(known).await,
            // A pause while the writer works (a long fold, say) is no pause.
            Err(_) => *projector.noting.borrow(),
        };
        if projector.projected() < known
            && !owed_by_appends
            && !projector.folding_inline(known).await
            && !projector.already_folded(known).await
        {
            if let Err(error) = projector.catch_up_to(known).await {
                tracing::warn!(%error, "projections could not catch up; retrying");
            }
        }
    }
}

/// Adds `batch` to what is `owed`, keeping it a run of positions without gaps:
/// what was folded meanwhile (up to `projected`) is owed no more, and owed events
/// that another process's appends separate from `batch` are left to the catch-up.
fn owe(owed: &mut Vec<Decoded>, batch: Vec<Decoded>, projected: Position) {
    owed.retain(|d| d.recorded.position > projected);
    let next = owed.last().map(|d| d.recorded.position.0 + 1);
    let first = batch.first().map(|d| d.recorded.position.0);
    if next.is_some() && next != first {
        owed.clear();
    }
    owed.extend(batch);
}

/// Decodes a batch once for every projection.
fn decode_all(batch: Vec<RecordedEvent>) -> Result<Vec<Decoded>, StoreError> {
    batch.into_iter().map(Decoded::new).collect()
}

/// Folds the events after `checkpoint` that the projection reads.
async fn fold(
    projection: &dyn Projection,
    tx: &mut Tx<'_>,
    batch: &[Decoded],
    checkpoint: Position,
) -> Result<(), StoreError> {
    let unread: Vec<&Decoded> = batch
        .iter()
        .filter(|d| d.recorded.position > checkpoint && projection.reads(&d.event))
        .collect();
    if unread.is_empty() {
        return Ok(());
    }
    projection.apply(tx, &unread).await
}

impl crm_events::AppendHook for Projector {
    fn appended<'a>(
        &'a self,
        tx: &'a mut Tx<'_>,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if events.is_empty() {
                return Ok(());
            }
            self.noting.send_replace(true);
            // What an append that did not commit staged is forgotten; what it took
            // of the committed debt is then left to the catch-up.
            let mut all = match self.owed.lock() {
                Ok(mut owed) => {
                    owed.staged = None;
                    std::mem::take(&mut owed.committed)
                }
                Err(_) => Vec::new(),
            };
            owe(&mut all, decode_all(events.to_vec())?, self.projected());
            if all.len() < OWED_AT_MOST {
                if let Ok(mut owed) = self.owed.lock() {
                    owed.staged = Some(all);
                }
                return Ok(());
            }
            self.fold_owed(tx, &all).await?;
            if let Ok(mut owed) = self.owed.lock() {
                owed.staged = Some(Vec::new());
            }
            Ok(())
        })
    }

    fn defers(&self, events: usize) -> bool {
        let defers = self
            .owed
            .lock()
            .is_ok_and(|owed| owed.committed.len() + events < OWED_AT_MOST);
        if defers {
            self.noting.send_replace(true);
        }
        defers
    }

    fn noted(&self, events: &[RecordedEvent]) {
        let projected = self.projected();
        let decoded = decode_all(events.to_vec());
        if let Ok(mut owed) = self.owed.lock() {
            owed.staged = None;
            match decoded {
                Ok(decoded) => owe(&mut owed.committed, decoded, projected),
                // Left to the catch-up, which reads them back from the log and
                // reports the event it cannot decode.
                Err(error) => {
                    tracing::warn!(%error, "an append could not be noted for a later fold");
                    owed.committed.clear();
                }
            }
        }
        self.noting.send_replace(false);
    }

    fn failed(&self) {
        if let Ok(mut owed) = self.owed.lock() {
            owed.staged = None;
        }
        // A fold made in that transaction never committed: nothing to publish.
        if let Ok(mut pending) = self.pending.lock() {
            pending.take();
        }
        self.noting.send_replace(false);
    }

    fn committed(&self, _last: Position) {
        if let Ok(mut owed) = self.owed.lock() {
            if let Some(staged) = owed.staged.take() {
                owed.committed = staged;
            }
        }
        self.noting.send_replace(false);
        let pending = self.pending.lock().ok().and_then(|mut p| p.take());
        if let Some(position) = pending {
            self.publish(position);
        }
    }
}

impl Projector {
    /// Folds `all` (appends of this process, in order, without gaps) inside the
    /// append's transaction, into every projection that has folded everything
    /// before them; one that is further behind is left to the catch-up.
    async fn fold_owed(&self, tx: &mut Tx<'_>, all: &[Decoded]) -> Result<(), StoreError> {
        let (Some(first), Some(last)) = (all.first(), all.last()) else {
            return Ok(());
        };
        let (before, last) = (
            Position(first.recorded.position.0 - 1),
            last.recorded.position,
        );
        let cached = self
            .cached_checkpoints
            .lock()
            .ok()
            .and_then(|mut cached| cached.take());
        let mut checkpoints = match cached {
            // The writer holds the write lock: nothing to lock.
            Some(cached) if tx.undisturbed() => cached,
            _ => self.lock_checkpoints(tx).await?,
        };
        let mut folded = Vec::new();
        let mut reached = 0;
        for projection in &self.projections {
            let at = checkpoints
                .get(projection.name())
                .copied()
                .unwrap_or(Position::START);
            if at >= last {
                reached += 1;
            } else if at >= before {
                fold(projection.as_ref(), tx, all, at).await?;
                folded.push(projection.name());
                reached += 1;
            }
        }
        self.move_checkpoints(tx, last, Some(&folded)).await?;
        for name in &folded {
            checkpoints.insert((*name).to_owned(), last);
        }
        if let Ok(mut cached) = self.cached_checkpoints.lock() {
            *cached = Some(checkpoints);
        }
        if reached == self.projections.len() {
            self.publish_after_commit(last);
        }
        Ok(())
    }
}
