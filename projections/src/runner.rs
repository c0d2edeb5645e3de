//! Running the projections: following the appends, settling reads, catching
//! up, rebuilding.
//!
//! A started [`Projector`] has a task of its own, the only one that folds while
//! the server runs (see `follower.rs`; how a fold goes is `fold.rs`'s). It hears
//! of this process's commits from the store, with their events, and folds them in
//! runs: one fold serves many appends (a lead edited ten times is written once,
//! the checkpoints move once, the writes go in multi-row statements), and the
//! appends never wait for it. Every read first [settles](Projector::settle): it
//! asks the task to fold everything committed before it, by any process, so a
//! read made after a write was acknowledged reflects it, on any server.

use std::collections::BTreeMap;
use std::sync::Arc;

use crm_events::{EventStore, Position, StoreError};
use tokio::sync::{mpsc, oneshot};

pub use crate::fold::{Checkpoint, Stopped};
use crate::fold::{Core, Folding};
use crate::projection::Projection;

/// Runs a set of projections against one store.
#[derive(Debug)]
pub struct Projector {
    core: Arc<Core>,
    /// The task's inbox, when the projector was started: readers ask it to fold.
    /// Dropping the projector closes it, and the task ends.
    asks: Option<mpsc::UnboundedSender<crate::follower::Ask>>,
}

/// How one projection is: its checkpoint, how far behind the log's head it is,
/// and whether it stopped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProjectionStatus {
    pub name: &'static str,
    pub position: Position,
    pub behind: i64,
    pub stopped: Option<String>,
}
impl Projector {
    /// Prepares the projections (rebuilding those whose version changed), catches
    /// them up with the log and starts the task that folds from then on.
    ///
    /// # Errors
    /// Store failures. (A projection that cannot fold is stopped, not an error.)
    pub async fn start(
        store: EventStore,
        projections: Vec<Arc<dyn Projection>>,
    ) -> Result<Arc<Self>, StoreError> {
        let commits = store.follow_commits();
        let head = store.watch_head();
        let opened = Self::open(store, projections).await?;
        let mut folding = Folding::default();
        opened.core.catch_up(&mut folding, None, &|_| {}).await?;
        let (asks, inbox) = mpsc::unbounded_channel();
        tokio::spawn(crate::follower::run(
            Arc::clone(&opened.core),
            folding,
            inbox,
            commits,
            head,
        ));
        Ok(Arc::new(Self {
            core: Arc::clone(&opened.core),
            asks: Some(asks),
        }))
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
        let core = Arc::new(Core::new(store, projections));
        core.prepare().await?;
        // Indexes a rebuild set aside and did not live to create again.
        crate::indexes::restore(core.store.database()).await?;
        Ok(Arc::new(Self { core, asks: None }))
    }

    /// The names of the projections, in folding order.
    #[must_use]
    pub fn names(&self) -> Vec<&'static str> {
        self.core.names()
    }

    /// The position every running projection has folded, as far as this process
    /// knows.
    #[must_use]
    pub fn projected(&self) -> Position {
        self.core.projected()
    }

    /// Returns once every projection has folded `position`.
    ///
    /// # Errors
    /// Store failures while folding; [`StoreError::ProjectionStopped`] when a
    /// projection stopped before it.
    pub async fn wait_for(&self, position: Position) -> Result<(), StoreError> {
        let (_, lowest) = self.core.head_and_lowest().await?;
        if lowest < position {
            self.fold_to(position).await?;
        }
        self.core.check_running(None, position)
    }

    /// Returns once every projection has folded every append committed before it
    /// was called, by any process: appends are acknowledged before they are
    /// folded, here and on another server. Every read starts with it (or with
    /// [`Projector::settle_for`]), so a read made after a write was acknowledged
    /// reflects it, on any server.
    ///
    /// # Errors
    /// As [`Projector::wait_for`].
    pub async fn settle(&self) -> Result<(), StoreError> {
        self.settle_reading(None).await
    }

    /// [`Projector::settle`] for a read of the projections named `read`: only
    /// their stopping makes it fail.
    ///
    /// # Errors
    /// Store failures while folding; [`StoreError::ProjectionStopped`] when one
    /// of `read` stopped.
    pub async fn settle_for(&self, read: &[&str]) -> Result<(), StoreError> {
        self.settle_reading(Some(read)).await
    }

    /// Compares the head with the checkpoints as stored, not as this process
    /// last saw them: another process may have emptied a projection (`crm
    /// rebuild`) since.
    async fn settle_reading(&self, read: Option<&[&str]>) -> Result<(), StoreError> {
        let (head, lowest) = self.core.head_and_lowest().await?;
        if lowest < head {
            self.fold_to(head).await?;
        }
        self.core.check_running(read, head)
    }

    /// Has the task fold up to `position` (or, for a projector that was only
    /// opened, folds itself). The task folds whether or not the caller still
    /// waits: a request cancelled halfway cannot stop a fold inside its
    /// transaction.
    async fn fold_to(&self, position: Position) -> Result<(), StoreError> {
        let Some(asks) = &self.asks else {
            let mut folding = Folding::default();
            return self
                .core
                .catch_up(&mut folding, Some(position), &|_| {})
                .await
                .map(drop);
        };
        let (answer, answered) = oneshot::channel();
        asks.send(crate::follower::Ask {
            to: position,
            answer,
        })
        .map_err(|_| StoreError::Closed)?;
        answered.await.map_err(|_| StoreError::Closed)?
    }

    /// Each projection's checkpoint.
    ///
    /// # Errors
    /// Store failures.
    pub async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        self.core.checkpoints().await
    }

    /// How each projection is, against the log's head.
    ///
    /// # Errors
    /// Store failures.
    pub async fn status(&self) -> Result<Vec<ProjectionStatus>, StoreError> {
        let (head, checkpoints) = self.core.head_and_checkpoints().await?;
        let stopped = self.core.stopped();
        Ok(self
            .names()
            .into_iter()
            .map(|name| {
                let position = checkpoints.get(name).copied().unwrap_or(Position::START);
                ProjectionStatus {
                    name,
                    position,
                    behind: (head.0 - position.0).max(0),
                    stopped: stopped.get(name).map(|s| s.reason.clone()),
                }
            })
            .collect())
    }

    /// The projections that stopped, and why.
    #[must_use]
    pub fn stopped(&self) -> BTreeMap<&'static str, Stopped> {
        self.core.stopped()
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
    /// finishes, and creates the indexes again. This process's task waits
    /// meanwhile: the rebuild folds (and reports) every batch itself.
    ///
    /// # Errors
    /// Store failures; [`StoreError::ProjectionStopped`] when a rebuilt
    /// projection cannot fold an event.
    pub async fn rebuild(
        &self,
        names: &[&'static str],
        progress: &(dyn Fn(Position) + Sync),
    ) -> Result<Position, StoreError> {
        let core = &self.core;
        let one_at_a_time = core.one_at_a_time.lock().await;
        core.reset(names).await?;
        let chosen = || {
            core.projections
                .iter()
                .filter(|p| names.contains(&p.name()))
        };
        let tables: Vec<&str> = chosen().flat_map(|p| p.tables().iter().copied()).collect();
        let folding: Vec<&str> = chosen()
            .flat_map(|p| p.folding_indexes().iter().copied())
            .collect();
        crate::indexes::defer(core.store.database(), &tables, &folding).await?;
        let reached = core
            .catch_up_holding(&one_at_a_time, &mut Folding::default(), None, progress)
            .await?;
        crate::indexes::restore(core.store.database()).await?;
        core.check_running(Some(names), reached)?;
        Ok(reached)
    }

    /// Folds everything the projections have not folded yet, in batches of one
    /// transaction each; returns the position reached. While a batch folds, the
    /// next one is read (on another connection), so reading the log and writing
    /// the projections overlap.
    ///
    /// # Errors
    /// Store failures. (A projection that cannot fold is stopped, not an error.)
    pub async fn catch_up(
        &self,
        progress: &(dyn Fn(Position) + Sync),
    ) -> Result<Position, StoreError> {
        self.core
            .catch_up(&mut Folding::default(), None, progress)
            .await
    }
}
