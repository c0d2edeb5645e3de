//! The projector's task: the only one that folds while the server runs.
//!
//! It hears of three things: the batches this process's writer commits (with
//! their events, from the store), the log's head moving (this process's appends
//! and, as soon as they are heard of, another's), and readers asking for
//! everything up to a position to be folded. It alone holds what it heard and
//! has not folded, and it decides when to fold:
//! - at once when a reader waits, or when the head moved past what it heard of
//!   (another process's appends, or batches of this one it missed);
//! - when [`HEARD_AT_MOST`] events wait;
//! - when appends pause for [`QUIET`].
//!
//! Otherwise this process's appends wait to be folded together: one fold then
//! serves many appends, and on SQLite the writer, which takes turns with the
//! folds, is held up by one fold per run rather than one per append.

use std::sync::Arc;
use std::time::Duration;

use crm_events::{Position, RecordedEvent, StoreError};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::fold::{decode_all, Core, Folding, Run};

/// A reader's request: everything up to `to` folded.
#[derive(Debug)]
pub(crate) struct Ask {
    pub to: Position,
    pub answer: oneshot::Sender<Result<(), StoreError>>,
}

/// At most this many events heard of wait to be folded: enough that under a
/// steady stream of appends one fold (and, on SQLite, one turn taken from the
/// writer) serves hundreds of them, few enough that a reader who finds them all
/// waiting has them folded within tens of milliseconds (which happens only while
/// appends never pause).
const HEARD_AT_MOST: usize = 1024;

/// How long appends must pause before what waits is folded. Under load the
/// writer commits every few milliseconds (16 writers on SQLite: a batch every
/// 2 to 3 ms), and a fold between two of them would take the writer's turn for
/// a handful of events: the pause must be longer than that gap, so that a steady
/// stream is folded in runs of [`HEARD_AT_MOST`]. Nobody waits for it: a read
/// has what it needs folded at once, so the pause only decides how soon
/// `/healthz` shows the projections at the head once appends stop.
const QUIET: Duration = Duration::from_millis(20);

/// How often, when nothing happens, the task asks the database for the log's
/// head: another SQLite process's appends are heard of no other way.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// After a failed fold, how long before the task tries again unasked.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Waiting events are dropped past this many (a fold that keeps failing); they
/// are in the log.
const HEARD_KEPT: usize = 16 * HEARD_AT_MOST;

/// Runs until the projector is dropped (its inbox closes).
pub(crate) async fn run(
    core: Arc<Core>,
    mut folding: Folding,
    mut asks: mpsc::UnboundedReceiver<Ask>,
    mut commits: mpsc::Receiver<Vec<RecordedEvent>>,
    mut head: watch::Receiver<Position>,
) {
    let mut waiting: Vec<Ask> = Vec::new();
    let mut commits_open = true;
    let mut retry_at: Option<Instant> = None;
    loop {
        let owing = folding.run.last().is_some_and(|p| p > core.projected());
        let pause = if owing { QUIET } else { LOOK_EVERY };
        let mut quiet = false;
        tokio::select! {
            ask = asks.recv() => match ask {
                Some(ask) => waiting.push(ask),
                None => return,
            },
            batch = commits.recv(), if commits_open => match batch {
                Some(batch) => hear(&core, &mut folding, batch),
                None => commits_open = false,
            },
            changed = head.changed() => if changed.is_err() {
                return;
            },
            () = tokio::time::sleep(pause) => quiet = true,
        }
        // Take in whatever else is already there.
        while let Ok(ask) = asks.try_recv() {
            waiting.push(ask);
        }
        while let Ok(batch) = commits.try_recv() {
            hear(&core, &mut folding, batch);
        }
        if quiet && !owing {
            // Asking also moves the watched head when another process appended.
            let _ = core.store.head().await;
        }
        let known = *head.borrow_and_update();
        let heard = folding
            .run
            .last()
            .unwrap_or(Position::START)
            .max(core.projected());
        let asked = waiting.iter().map(|ask| ask.to).max();
        let due = asked.is_some()
            || known > heard
            || folding.run.events.len() >= HEARD_AT_MOST
            || (quiet && owing);
        let resting = retry_at.is_some_and(|at| Instant::now() < at) && asked.is_none();
        if !due || resting {
            continue;
        }
        let target = known.max(heard).max(asked.unwrap_or(Position::START));
        let folded = core.catch_up(&mut folding, Some(target), &|_| {}).await;
        retry_at = match &folded {
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(%error, "projections could not fold; retrying");
                Some(Instant::now() + RETRY_AFTER)
            }
        };
        if folding.run.events.len() > HEARD_KEPT {
            folding.run = Run::default();
        }
        for ask in waiting.drain(..) {
            let answer = match &folded {
                Ok(_) => Ok(()),
                Err(error) => Err(again(error)),
            };
            // A reader that stopped waiting has gone.
            let _ = ask.answer.send(answer);
        }
    }
}

/// Adds a batch this process committed to what waits to be folded.
fn hear(core: &Core, folding: &mut Folding, batch: Vec<RecordedEvent>) {
    folding.run.forget_through(core.projected());
    match decode_all(batch) {
        Ok(decoded) => folding.run.extend(decoded),
        // Left to the fold, which reads it back from the log and reports the
        // event it cannot decode.
        Err(error) => {
            tracing::warn!(%error, "a committed batch could not be decoded");
            folding.run = Run::default();
        }
    }
}

/// The failure of a fold, for each reader that waited on it.
fn again(error: &StoreError) -> StoreError {
    // The read cannot be brought up to date now: the service is unavailable.
    match error {
        StoreError::Closed => StoreError::Closed,
        _ => StoreError::Unavailable(sqlx::Error::Protocol(error.to_string())),
    }
}
