//! The command side: sessions (actor, subject, impersonation), and the command
//! service that, for each command, loads the aggregate, asks the policy, decides
//! (purely, in [`crate::domain`]) and appends with optimistic concurrency.
//!
//! - [`App`]: the service; its commands live in [`accounts`] (sites, users,
//!   passwords, sign-in), [`impersonation`] ("Log in as user" and "Return to
//!   Admin"), [`leads`] and [`settings`]; what frontends read, through the same
//!   policy, in [`reads`] (leads, users, settings, `me`) and [`audit`] (sessions,
//!   changes, exports and manifests, verification, digests); reads that outlive
//!   their request (the event stream, the export) re-check their session in
//!   [`streams`]; answers kept for `Idempotency-Key` retries in [`responses`].
//! - [`migrate`] and [`SCHEMA`]: the application's tables, applied with the log's
//!   and the projections'.
//! - [`context`]: the request context every command runs in.
//! - [`error`]: [`AppError`], every way a command can be refused.

pub mod accounts;
mod aggregates;
pub mod audit;
pub mod chain;
pub mod clock;
pub mod context;
pub mod digests;
pub mod error;
pub mod impersonation;
pub mod leads;
pub mod past;
pub mod reads;
pub mod responses;
pub mod revert;
mod sessions;
pub mod settings;
pub mod streams;
pub mod throttle;

use std::sync::Arc;

use chrono::Duration;
use crm_events::{
    AppendOutcome, DomainEvent, EventStore, ExpectedVersion, Position, SideWrite, StoreError,
    StreamAppend, StreamKey, StreamType,
};
use crm_projections::Projector;

pub use aggregates::Loaded;
pub use chain::ChainStatus;
pub use clock::Clock;
pub use context::RequestContext;
pub use error::AppError;
pub use sessions::token_hash;

/// How long a sign-in lasts.
pub const SESSION_LIFETIME: Duration = Duration::hours(12);

/// What a successful write reports: the global position of its last event (a read
/// made after it reflects the write) and the aggregate's version after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub position: Position,
    pub version: u64,
}

/// The application's tables: credentials, sessions and the answers kept for
/// retries (the log's and the projections' are their crates').
pub static SCHEMA: crm_events::schema::Schema = crm_events::schema::Schema {
    owner: "application",
    sqlite: &SQLITE_MIGRATIONS,
    postgres: &POSTGRES_MIGRATIONS,
};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate::Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("migrations/sqlite")
};
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate::Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("migrations/postgres")
};

/// Applies every crate's migrations that the store's database lacks (the log's,
/// the projections', the application's), and refuses a database that has
/// migrations none of them knows: a newer release made it.
///
/// # Errors
/// [`AppError::Store`] with [`StoreError::Migration`].
pub async fn migrate(store: &EventStore) -> Result<(), AppError> {
    use crm_events::schema::{unknown_versions, LOG};
    // Opening the store applied the log's.
    for schema in [&crm_projections::SCHEMA, &SCHEMA] {
        schema.apply(store.database()).await?;
    }
    let unknown =
        unknown_versions(store.database(), &[&LOG, &crm_projections::SCHEMA, &SCHEMA]).await?;
    if unknown.is_empty() {
        return Ok(());
    }
    Err(AppError::Store(StoreError::Migration(
        sqlx::migrate::MigrateError::Source(
            format!(
                "the database has migrations this release does not know \
                 (versions {unknown:?}): a newer release made it"
            )
            .into(),
        ),
    )))
}

/// What `/healthz` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub head: Position,
    pub chain: ChainStatus,
    /// Each projection's checkpoint, how far behind the head, whether it stopped.
    pub projections: Vec<crm_projections::ProjectionStatus>,
}

impl Health {
    /// Whether everything is as it should be: the chain intact, every projection
    /// folding.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.chain.ok && self.projections.iter().all(|p| p.stopped.is_none())
    }
}

/// The command service.
#[derive(Debug, Clone)]
pub struct App {
    store: EventStore,
    projector: Arc<Projector>,
    clock: Clock,
    caches: Arc<aggregates::Caches>,
    throttle: Arc<throttle::LoginThrottle>,
    chain: Arc<chain::ChainWatch>,
    signer: Option<Arc<digests::Signer>>,
}

impl App {
    /// Applies the migrations the database lacks ([`migrate`]), starts the
    /// projections on `store` (catching them up with the log) and returns the
    /// service.
    ///
    /// # Errors
    /// A database of a newer release; store failures while catching up.
    pub async fn start(store: EventStore, clock: Clock) -> Result<Self, AppError> {
        Self::start_with(store, clock, crm_projections::all()).await
    }

    /// [`App::start`] with another set of projections: the core's own
    /// ([`crm_projections::all`]) and any of the embedder's, folded alike (a
    /// projection of its own that stops leaves the others folding).
    ///
    /// # Errors
    /// As [`App::start`].
    pub async fn start_with(
        store: EventStore,
        clock: Clock,
        projections: Vec<Arc<dyn crm_projections::Projection>>,
    ) -> Result<Self, AppError> {
        migrate(&store).await?;
        let projector = Projector::start(store.clone(), projections).await?;
        Ok(Self {
            store,
            projector,
            clock,
            caches: Arc::default(),
            throttle: Arc::default(),
            chain: Arc::default(),
            signer: None,
        })
    }

    #[must_use]
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// How the server is: the log's head (the database answers), the hash chain
    /// as last checked, and the projections.
    ///
    /// # Errors
    /// [`AppError::Store`] when the database does not answer.
    pub async fn health(&self) -> Result<Health, AppError> {
        let head = self.store.head().await?;
        Ok(Health {
            head,
            chain: self.chain_status(),
            projections: self.projector.status().await?,
        })
    }

    /// Whether the caller may do `action` at all: asked before a request's body
    /// is read, so that a refusal is answered before a complaint about the body.
    /// Every command and read checks again.
    ///
    /// # Errors
    /// [`AppError::Forbidden`], [`AppError::ImpersonationForbidden`].
    pub fn may(
        &self,
        ctx: &RequestContext,
        action: crate::domain::policy::Action,
    ) -> Result<(), AppError> {
        Ok(crate::domain::policy::authorize(&ctx.caller, action)?)
    }

    /// Whether the caller may change anything at all (a view-only impersonation may
    /// not): asked before an answer kept for a retry is given back or run again.
    ///
    /// # Errors
    /// [`AppError::ImpersonationReadOnly`].
    pub fn may_write(&self, ctx: &RequestContext) -> Result<(), AppError> {
        Ok(crate::domain::policy::may_write(&ctx.caller)?)
    }

    /// A context for the operator (the command line) acting on `site` with the
    /// owner's permissions; what it appends has [`crm_events::ids::UserId::SYSTEM`] as actor.
    #[must_use]
    pub fn operator(&self, site: crm_events::ids::SiteId) -> RequestContext {
        let operator = crate::domain::policy::UserView {
            id: crm_events::ids::UserId::SYSTEM,
            site_id: site,
            role: crm_events::catalog::values::Role::Owner,
            active: true,
        };
        RequestContext {
            caller: crate::domain::policy::Caller::as_self(operator),
            session: [0; 32],
            correlation_id: crm_events::ids::CorrelationId::generate(),
            idempotency_key: None,
            http_request: None,
        }
    }

    /// Returns once the projections reflect every write this process made: every
    /// read starts with it (read-your-writes on the server that wrote).
    ///
    /// # Errors
    /// Store failures while the projections catch up.
    pub async fn settle(&self) -> Result<(), AppError> {
        Ok(self.projector.settle().await?)
    }

    /// [`App::settle`] for a read of the projections named `read` (their
    /// `NAME`s): another projection's stopping does not hold it up.
    ///
    /// # Errors
    /// Store failures while the projections catch up; one of `read` stopped.
    pub async fn settle_for(&self, read: &[&str]) -> Result<(), AppError> {
        Ok(self.projector.settle_for(read).await?)
    }

    /// The database to read the projections from, once they reflect every write
    /// this process made (see [`App::settle`]).
    ///
    /// # Errors
    /// Store failures while the projections catch up.
    pub async fn settled(&self, read: &[&str]) -> Result<&crm_events::Database, AppError> {
        self.settle_for(read).await?;
        Ok(self.store.database())
    }

    /// The projections the reads come from.
    #[must_use]
    pub fn projector(&self) -> &Projector {
        &self.projector
    }

    #[must_use]
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Appends the decided `events` to one stream of the request's site; appends
    /// nothing when there are none (a change that changes nothing).
    async fn record(
        &self,
        ctx: &RequestContext,
        stream: StreamKey,
        expected: ExpectedVersion,
        events: Vec<DomainEvent>,
    ) -> Result<Written, AppError> {
        self.record_with(ctx, stream, expected, events, Vec::new())
            .await
    }

    /// [`App::record`] with rows beside the log (credentials, sessions) written in
    /// the same transaction: both commit or neither.
    async fn record_with(
        &self,
        ctx: &RequestContext,
        stream: StreamKey,
        expected: ExpectedVersion,
        events: Vec<DomainEvent>,
        side: Vec<SideWrite>,
    ) -> Result<Written, AppError> {
        let version_now = match expected {
            ExpectedVersion::Exact(v) => v,
            _ => 0,
        };
        if events.is_empty() {
            return Ok(Written {
                position: self.store.head().await?,
                version: version_now,
            });
        }
        let mut side = side;
        let lead = (stream.stream_type == StreamType::Lead).then_some(stream.id);
        side.extend(sessions::key_reserved(ctx, self.clock.now(), lead));
        // A write made while logged in as someone commits only while the session
        // still holds that impersonation (its own start and end excepted).
        let acting = ctx
            .impersonation()
            .filter(|_| stream.stream_type != StreamType::Impersonation);
        if let Some(id) = acting {
            side.push(sessions::still_acting(&ctx.session, id, self.clock.now()));
        }
        let appended = self
            .store
            .append_with(
                vec![StreamAppend {
                    site_id: ctx.site(),
                    stream,
                    expected,
                    events: events.iter().map(DomainEvent::to_new_event).collect(),
                }],
                ctx.metadata(),
                side,
            )
            .await;
        match (appended, acting) {
            (Ok(outcome), _) => Ok(written(&outcome)),
            (
                Err(StoreError::SideWriteRefused {
                    what: sessions::ACTING,
                    ..
                }),
                Some(id),
            ) => Err(self.impersonation_gone(id).await),
            (Err(error), _) => Err(error.into()),
        }
    }

    /// Why a write made in impersonation `id` could not commit: how and when it
    /// ended, or that it is being revoked.
    async fn impersonation_gone(&self, id: crm_events::ids::ImpersonationId) -> AppError {
        match self.load_impersonation(id).await {
            Ok(session) => match session.state.ended {
                Some((end_reason, ended_at)) => AppError::ImpersonationEnded {
                    end_reason,
                    ended_at,
                },
                None => AppError::Conflict(
                    "this login as another user was revoked while the request ran; \
                     nothing was changed"
                        .into(),
                ),
            },
            Err(error) => error,
        }
    }
}

/// Runs `round` on `app` now and then every `interval`, until the returned task
/// is aborted or the store closes; a failed round is logged as `failing` says,
/// and the next one comes all the same.
fn every<F, Fut>(
    app: &App,
    interval: std::time::Duration,
    failing: &'static str,
    round: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(App) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), AppError>> + Send,
{
    let app = app.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !app.store.database().is_closed() {
            tick.tick().await;
            if let Err(error) = round(app.clone()).await {
                tracing::warn!(%error, "{failing}");
            }
        }
    })
}

fn written(outcome: &AppendOutcome) -> Written {
    Written {
        position: outcome.last_position,
        version: outcome.streams.first().map_or(0, |s| s.version),
    }
}

/// How often a command without `If-Match` is tried again when another write to the
/// same stream slipped in between its load and its append.
const RETRIES: usize = 3;

/// Runs `attempt` (load, decide, append) again when it lost such a race; with
/// `If-Match` the client decides, so a conflict is answered at once.
async fn retry_lost_races<F, Fut>(
    if_match: Option<u64>,
    mut attempt: F,
) -> Result<Written, AppError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Written, AppError>>,
{
    let mut retries = 0;
    loop {
        match attempt().await {
            Err(AppError::Conflict(_)) if if_match.is_none() && retries < RETRIES => retries += 1,
            result => return result,
        }
    }
}

/// The version a write must find: the client's `If-Match` when it sent one (a stale
/// one is a conflict), else the version just loaded.
fn expect(if_match: Option<u64>, loaded: u64) -> Result<ExpectedVersion, AppError> {
    match if_match {
        Some(v) if v != loaded => Err(AppError::Conflict(format!(
            "version {v} is stale: the resource is at version {loaded}"
        ))),
        _ => Ok(ExpectedVersion::Exact(loaded)),
    }
}
