//! Reads that outlive their request: the site's event stream and the audit
//! export go on for as long as the session that opened them may read them, and
//! stop, saying why, once it may not (signed out, expired, deactivated, logged in
//! as someone since, or its role lost the right).

use std::time::{Duration, Instant};

use crm_events::{Position, RecordedEvent};
use futures_util::{Stream, StreamExt};

use super::{App, AppError, RequestContext};
use crate::domain::policy::{authorize, Action};

/// How often an open stream re-checks its session when nothing else makes it.
pub const RECHECK: Duration = Duration::from_secs(5);

/// What a followed event stream yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Followed {
    /// An event of the caller's site.
    Event(Box<RecordedEvent>),
    /// The session may no longer read events: why (`logged_out`, `expired`,
    /// `deactivated`, `impersonation`, `forbidden`, or `unavailable` when the
    /// database did not answer the check). Nothing follows.
    Ended(&'static str),
    /// The log could not be read; the client resumes from its last event.
    /// Nothing follows.
    Interrupted,
}

impl App {
    /// The caller's site's events after `after`, in order (owners, admins, auditors).
    ///
    /// # Errors
    /// [`AppError::Forbidden`], [`AppError::ImpersonationForbidden`]; store failures.
    pub async fn site_events(
        &self,
        ctx: &RequestContext,
        after: Position,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, AppError> {
        authorize(&ctx.caller, Action::ReadEvents)?;
        Ok(self.store.read_site(ctx.site(), after, limit).await?)
    }

    /// The caller's site's events after `after`, then each one as it is appended,
    /// for as long as the session may read them: it is re-checked before any event
    /// appended after the last check goes out, and every [`RECHECK`]; no event
    /// appended after the moment it lost the right reaches the stream.
    ///
    /// # Errors
    /// [`AppError::Forbidden`], [`AppError::ImpersonationForbidden`], before anything
    /// is read.
    pub fn follow_site_events(
        &self,
        ctx: RequestContext,
        after: Position,
    ) -> Result<impl Stream<Item = Followed> + Send + 'static, AppError> {
        authorize(&ctx.caller, Action::ReadEvents)?;
        let app = self.clone();
        let site = ctx.site();
        Ok(async_stream::stream! {
            let mut events = std::pin::pin!(app.store.subscribe(after));
            // Events up to here were appended before the last check found the
            // session allowed: they may go out.
            let mut cleared = Position::START;
            let mut recheck = tokio::time::interval(RECHECK);
            recheck.tick().await;
            loop {
                let next = tokio::select! {
                    next = events.next() => next,
                    _ = recheck.tick() => {
                        match app.allowed_until(&ctx, Action::ReadEvents).await {
                            Ok(head) => cleared = head,
                            Err(why) => { yield Followed::Ended(why); break; }
                        }
                        continue;
                    }
                };
                match next {
                    Some(Ok(event)) => {
                        if event.position > cleared {
                            match app.allowed_until(&ctx, Action::ReadEvents).await {
                                Ok(head) => cleared = head,
                                Err(why) => { yield Followed::Ended(why); break; }
                            }
                        }
                        if event.site_id == site {
                            yield Followed::Event(Box::new(event));
                        }
                    }
                    Some(Err(error)) => {
                        tracing::error!(%error, "event stream interrupted");
                        yield Followed::Interrupted;
                        break;
                    }
                    None => break,
                }
            }
        })
    }

    /// The log's head, read before the session is found still allowed to do
    /// `action`: everything up to it was appended before any revocation that
    /// comes after the check. Else why the session may not.
    async fn allowed_until(
        &self,
        ctx: &RequestContext,
        action: Action,
    ) -> Result<Position, &'static str> {
        let head = self.store.head().await.map_err(|error| {
            tracing::error!(%error, "event stream: the database did not answer");
            "unavailable"
        })?;
        match self.why_reading_ends(ctx, action).await {
            Ok(None) => Ok(head),
            Ok(Some(reason)) => Err(reason),
            Err(error) => {
                tracing::error!(%error, "event stream: the session could not be checked");
                Err("unavailable")
            }
        }
    }
}

/// `pages` for as long as the session may do `action`: re-checked before each
/// page is read, and while a page goes out, before each piece of it once
/// [`RECHECK`] has passed since the last check (a slow client takes its time
/// over a large page). Once the session may not, the stream stops short with an
/// error saying why, and the log says it too; no later page is read.
pub(super) fn while_allowed(
    app: App,
    ctx: RequestContext,
    action: Action,
    pages: impl Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static,
) -> impl Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    /// The most one piece of a page holds.
    const PIECE: usize = 64 * 1024;
    async_stream::stream! {
        let mut pages = std::pin::pin!(pages);
        let mut checked: Option<Instant> = None;
        'pages: loop {
            if let Err(stop) = still_allowed(&app, &ctx, action, &mut checked, true).await {
                yield Err(stop);
                break;
            }
            let page = match pages.next().await {
                Some(Ok(page)) => page,
                Some(Err(error)) => {
                    yield Err(error);
                    break;
                }
                None => break,
            };
            for piece in page.chunks(PIECE) {
                if let Err(stop) = still_allowed(&app, &ctx, action, &mut checked, false).await {
                    yield Err(stop);
                    break 'pages;
                }
                yield Ok(piece.to_vec());
            }
        }
    }
}

/// Whether an export may go on: checked when `now` is asked for, or once
/// [`RECHECK`] has passed since the last check.
async fn still_allowed(
    app: &App,
    ctx: &RequestContext,
    action: Action,
    checked: &mut Option<Instant>,
    now: bool,
) -> Result<(), std::io::Error> {
    if !now && checked.is_some_and(|at| at.elapsed() < RECHECK) {
        return Ok(());
    }
    *checked = Some(Instant::now());
    let ended = match app.why_reading_ends(ctx, action).await {
        Ok(None) => return Ok(()),
        Ok(Some(reason)) => reason,
        Err(error) => {
            tracing::error!(%error, "audit export: the session could not be checked");
            "unavailable"
        }
    };
    tracing::warn!(
        reason = ended,
        "audit export stopped: the session may no longer read it"
    );
    Err(std::io::Error::other(format!("the export ended: {ended}")))
}
