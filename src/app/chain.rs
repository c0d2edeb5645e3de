//! The server watches its own hash chain: verified at start and then every
//! minute, each time only from where the last round stopped (never a rescan of
//! the whole log per minute). Each round also verifies the log again from the
//! start, a slice of [`REVIEW_PER_ROUND`] events at a time, so that a change made
//! to events verified long ago is caught within `log length / slice` minutes;
//! and a full verification asked for (`GET /api/audit/verify`) that finds a break
//! counts too. A break shows in `/healthz` (`degraded`, with the first bad
//! position), on every audit response (`X-Chain-Intact: false`) and in the log,
//! naming the site and the position.

use std::sync::RwLock;
use std::time::Duration;

use crm_events::{ChainVerifier, Position, VerifyReport};
use serde::Serialize;

use super::{App, AppError};

/// What the server knows of its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ChainStatus {
    /// No break found up to `checked_to`.
    pub ok: bool,
    /// The last position verified.
    pub checked_to: i64,
    /// The first position at which the log departs from its chain.
    pub first_bad_position: Option<i64>,
}

/// How many events each round verifies again from the start.
pub const REVIEW_PER_ROUND: u64 = 50_000;

/// The verification in progress and its last result.
#[derive(Debug)]
pub(crate) struct ChainWatch {
    verifier: tokio::sync::Mutex<ChainVerifier>,
    /// The verification again from the start, a slice per round.
    review: tokio::sync::Mutex<ChainVerifier>,
    status: RwLock<ChainStatus>,
}

impl Default for ChainWatch {
    fn default() -> Self {
        Self {
            verifier: tokio::sync::Mutex::new(ChainVerifier::for_whole_log()),
            review: tokio::sync::Mutex::new(ChainVerifier::for_whole_log()),
            status: RwLock::new(ChainStatus {
                ok: true,
                checked_to: 0,
                first_bad_position: None,
            }),
        }
    }
}

impl App {
    /// The chain as last verified (see [`App::check_chain`]).
    #[must_use]
    pub fn chain_status(&self) -> ChainStatus {
        self.chain
            .status
            .read()
            .map(|status| *status)
            .unwrap_or(ChainStatus {
                ok: false,
                checked_to: 0,
                first_bad_position: None,
            })
    }

    /// Verifies what was appended since the last round (the whole log, the first
    /// time) and records the result; a break found is logged once, naming the
    /// site and the position.
    ///
    /// # Errors
    /// Store failures (the status is left as it was).
    pub async fn check_chain(&self) -> Result<ChainStatus, AppError> {
        let mut verifier = self.chain.verifier.lock().await;
        // The first round reads the whole log: no slice of it to read again.
        let first_round = verifier.checked_to() == Position::START;
        let report = self.store.verify_since(&mut verifier).await?;
        let checked_to = verifier.checked_to().0;
        drop(verifier);
        if report.ok && !first_round {
            let mut review = self.chain.review.lock().await;
            let (again, reached) = self
                .store
                .verify_some(&mut review, REVIEW_PER_ROUND)
                .await?;
            if !again.ok {
                return Ok(self.note_chain(&again, checked_to).await);
            }
            if reached {
                *review = ChainVerifier::for_whole_log();
            }
        }
        Ok(self.note_chain(&report, checked_to).await)
    }

    /// Takes a verification's result into the status: a break found (by a round
    /// or by a full verification asked for) stays; it is logged once.
    pub async fn note_chain(&self, report: &VerifyReport, checked_to: i64) -> ChainStatus {
        let known = self.chain_status();
        let status = if !known.ok {
            known
        } else {
            ChainStatus {
                ok: report.ok,
                checked_to: checked_to.max(known.checked_to),
                first_bad_position: report.first_bad_position.map(|p| p.0),
            }
        };
        if known.ok && !report.ok {
            self.log_break(report).await;
        }
        if let Ok(mut kept) = self.chain.status.write() {
            *kept = status;
        }
        status
    }

    async fn log_break(&self, report: &VerifyReport) {
        let position = report.first_bad_position.unwrap_or(Position::START);
        let site = self
            .store
            .read_all_stored(Position(position.0 - 1), 1)
            .await
            .ok()
            .and_then(|events| events.first().map(|e| e.site_id.to_string()));
        tracing::error!(
            position = position.0,
            site = site.as_deref().unwrap_or("unknown"),
            problem = report.problem.as_deref().unwrap_or(""),
            "the event log's hash chain is broken: the log was changed outside the server"
        );
    }

    /// Runs [`App::check_chain`] now and then every `interval`, until the
    /// returned task is aborted or the store closes.
    #[must_use]
    pub fn watch_chain(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        super::every(
            self,
            interval,
            "could not verify the event log's hash chain",
            |app| async move { app.check_chain().await.map(drop) },
        )
    }
}
