//! The event store: append with optimistic concurrency and idempotency, read, and
//! subscribe, on SQLite or PostgreSQL.
//!
//! # Group commit
//!
//! Every append of this process goes through one writer task, on a database
//! connection of its own (`writer.rs` decides, a backend does each step on its
//! database: `backend.rs`, `sqlite.rs`, `postgres.rs`). Callers send their validated request
//! and wait; the writer takes everything that is waiting (up to a limit, and
//! waiting a moment for the late members of a group of concurrent callers), decides
//! each request against the state inside one transaction, writes the accepted ones
//! in bulk and commits once: one fsync for the whole batch. Each caller still gets
//! its own outcome, conflict or error. If a batch fails as a whole, its requests are
//! retried one by one so one bad request cannot sink the others.
//!
//! # Order
//!
//! Every appending transaction first locks the single row holding the log's last
//! position, so appends of all processes on the database commit one after another,
//! in position order, and positions are dense. A reader that has seen position `p` has
//! seen every position before it; nobody ever skips an event.

mod backend;
mod bind;
pub mod bulk;
mod digests;
mod keys;
mod plan;
mod postgres;
mod rows;
mod side;
mod sql;
mod sqlite;
mod tx;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use futures_core::Stream;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::catalog;
pub use crate::database::Database;
use crate::envelope::{
    AppendOutcome, Metadata, Position, RecordedEvent, StreamAppend, StreamKey, StreamType,
};
use crate::error::StoreError;
use crate::hash::{ChainHead, ChainVerifier, VerifyReport};
use crate::ids::SiteId;
use crate::on_pool;
use plan::AppendRequest;
use rows::{ChainRow, EventRow};
pub use side::{Changes, SideWrite};
pub use tx::Tx;

/// The largest payload one event may carry.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;

/// The longest idempotency key accepted: room for a client's key of up to 255
/// characters behind the id of whoever sent it (the application scopes keys to
/// the signed-in user).
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 320;

/// A connection idle this long is pinged (a round trip) before it is used again,
/// whether taken from a pool or the writer's own: a restart of the server may have
/// cut it, and a request sent on it would fail for nothing.
pub(crate) const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// How many events one read returns at most.
pub const MAX_PAGE: u32 = 10_000;

/// Tunables; the defaults suit production.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The most requests one group commit takes.
    pub max_batch: usize,
    /// How often a caught-up subscriber looks for appends it was not told about
    /// (appends of another process on SQLite; a lost notification on PostgreSQL).
    pub poll_interval: Duration,
    /// The master key that seals each lead's key (see [`crate::vault`]). Without
    /// one, the store reads and verifies, but refuses to record a lead's
    /// personal values and reads sealed ones as an error.
    pub master_key: Option<crate::vault::MasterKey>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_batch: 512,
            poll_interval: Duration::from_millis(100),
            master_key: None,
        }
    }
}

type Reply = oneshot::Sender<Result<AppendOutcome, StoreError>>;

/// The event store. Cheap to clone; all clones share one writer.
#[derive(Debug, Clone)]
pub struct EventStore {
    inner: Arc<Inner>,
}

/// Where the writer announces each batch it commits (see
/// [`EventStore::follow_commits`]).
type Commits = Arc<std::sync::Mutex<Option<mpsc::Sender<Vec<RecordedEvent>>>>>;

/// How many committed batches wait, at most, for their follower to hear of them.
const COMMITS_WAITING: usize = 1024;

#[derive(Debug)]
struct Inner {
    db: Database,
    commits: Commits,
    /// On SQLite, this process's turns at writing (see [`EventStore::write_turn`]).
    turns: Option<Arc<tokio::sync::Mutex<()>>>,
    writer: mpsc::Sender<(AppendRequest, Reply)>,
    /// The last position known to be committed (by any process, as far as we heard).
    head: watch::Sender<Position>,
    options: StoreOptions,
    keys: keys::Keys,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl EventStore {
    /// Opens the store at `url` (`sqlite://PATH`, `sqlite::memory:` or
    /// `postgres://...`), applying the embedded migrations.
    ///
    /// # Errors
    /// [`StoreError::UnsupportedUrl`], [`StoreError::Unavailable`] when the database
    /// cannot be reached, [`StoreError::Migration`].
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, StoreOptions::default()).await
    }

    /// [`EventStore::open`] with explicit options.
    ///
    /// # Errors
    /// As [`EventStore::open`].
    pub async fn open_with(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let sqlite = url.starts_with("sqlite:");
        let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
        let (db, backend) = if sqlite {
            let (pool, backend) = sqlite::open(url).await?;
            (Database::Sqlite(pool), Ok(backend))
        } else if postgres {
            let (pool, backend) = postgres::open(url).await?;
            (Database::Postgres(pool), Err(backend))
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        crate::schema::LOG.apply(&db).await?;
        let keys = keys::Keys::new(options.master_key.clone());
        keys.check(&db).await?;
        let last: i64 = on_pool!(&db, |pool| sqlx::query_scalar(sql::HEAD)
            .fetch_one(pool)
            .await?);
        let (head, _) = watch::channel(Position(last));
        let (writer, requests) = mpsc::channel(options.max_batch * 4);
        let commits = Commits::default();
        let turns = sqlite.then(Arc::default);
        let run = writer::Writer {
            db: db.clone(),
            head: head.clone(),
            commits: commits.clone(),
            turns: turns.clone(),
            max_batch: options.max_batch,
        };
        let mut tasks = Vec::new();
        match backend {
            Ok(sqlite) => tasks.push(tokio::spawn(writer::run(run, sqlite, requests))),
            Err(postgres) => {
                let listeners = postgres.listeners();
                tasks.push(tokio::spawn(writer::run(run, postgres, requests)));
                if let Database::Postgres(pool) = &db {
                    tasks.push(tokio::spawn(postgres::follow_notifications(
                        pool.clone(),
                        head.clone(),
                        listeners.clone(),
                    )));
                    tasks.push(tokio::spawn(postgres::watch_listeners(
                        pool.clone(),
                        listeners,
                    )));
                }
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                commits,
                turns,
                writer,
                head,
                options,
                keys,
                tasks,
            }),
        })
    }

    /// On PostgreSQL, lets `role` run `crm serve` with least privilege (see the
    /// README): only SELECT and INSERT on the events table, which it does not own;
    /// reads and writes of the other tables; ownership of `disposable`, the
    /// projections' tables. Run as the database's owner.
    ///
    /// # Errors
    /// [`StoreError::UnsupportedUrl`] on SQLite, which has no roles; a role name
    /// that is not one; database errors (a role that does not exist, an owner
    /// that may not grant).
    pub async fn grant_least_privilege(
        &self,
        role: &str,
        disposable: &[&str],
    ) -> Result<(), StoreError> {
        match &self.inner.db {
            Database::Postgres(pool) => {
                postgres::grant_least_privilege(pool, role, disposable).await
            }
            Database::Sqlite(_) => Err(StoreError::UnsupportedUrl(
                "roles are PostgreSQL's: a SQLite database is a file, guarded by its permissions"
                    .into(),
            )),
        }
    }

    /// The database behind the store.
    #[must_use]
    pub fn database(&self) -> &Database {
        &self.inner.db
    }

    /// From now on, each batch this store's writer commits is sent on the
    /// returned channel, in commit order, before the head moves (so whoever hears
    /// of a new head from [`EventStore::watch_head`] finds the batch waiting). A
    /// later call replaces the follower. The writer never waits for it: a
    /// follower that falls [`COMMITS_WAITING`] batches behind misses the next
    /// ones, which it can read from the log, as it does another process's.
    pub fn follow_commits(&self) -> mpsc::Receiver<Vec<RecordedEvent>> {
        let (follower, batches) = mpsc::channel(COMMITS_WAITING);
        if let Ok(mut slot) = self.inner.commits.lock() {
            *slot = Some(follower);
        }
        batches
    }

    /// On SQLite, where one connection writes at a time, this process's writers
    /// (the store's and the projections') take turns here: a turn is handed on
    /// at once, where SQLite's busy timeout has a waiting writer sleep
    /// milliseconds between tries. Hold the turn for the whole transaction.
    /// `None` on PostgreSQL, whose writers lock only the rows they write.
    pub async fn write_turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match &self.inner.turns {
            Some(turns) => Some(Arc::clone(turns).lock_owned().await),
            None => None,
        }
    }

    /// The last position known to be committed, by this process or (as soon as it
    /// is heard of) another: wakes whoever waits on it at each new append.
    #[must_use]
    pub fn watch_head(&self) -> watch::Receiver<Position> {
        self.inner.head.subscribe()
    }

    /// Appends `events` to one stream, atomically.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the stream is not at `expected`;
    /// [`StoreError::IdempotencyKeyReused`]; the validation errors of
    /// [`EventStore::append_atomic`]; [`StoreError::Unavailable`] or
    /// [`StoreError::Database`] when the database fails (nothing is appended).
    pub async fn append(
        &self,
        append: StreamAppend,
        meta: Metadata,
    ) -> Result<AppendOutcome, StoreError> {
        self.append_atomic(vec![append], meta).await
    }

    /// Appends to several streams of one site, all or nothing. A retry carrying the
    /// same idempotency key and content appends nothing and returns the first
    /// outcome (with `replayed` set).
    ///
    /// # Errors
    /// [`StoreError::EmptyAppend`], [`StoreError::UnknownEventType`],
    /// [`StoreError::InvalidPayload`], [`StoreError::PayloadTooLarge`],
    /// [`StoreError::CrossSite`] before anything is attempted; then as
    /// [`EventStore::append`].
    pub async fn append_atomic(
        &self,
        appends: Vec<StreamAppend>,
        meta: Metadata,
    ) -> Result<AppendOutcome, StoreError> {
        self.append_with(appends, meta, Vec::new()).await
    }

    /// As [`EventStore::append_atomic`], writing `side` (rows beside the log:
    /// credentials, sessions, ...) in the same transaction, after the events: both
    /// commit or neither. A retry recognised by its idempotency key writes them no
    /// second time. Whether the caller waits for the answer or not, the writer runs
    /// the append and its rows together.
    ///
    /// # Errors
    /// As [`EventStore::append_atomic`]; [`StoreError::SideWriteRefused`] when a
    /// row hits a unique key or changes another number of rows than it must
    /// (nothing is appended).
    pub async fn append_with(
        &self,
        appends: Vec<StreamAppend>,
        meta: Metadata,
        mut side: Vec<SideWrite>,
    ) -> Result<AppendOutcome, StoreError> {
        let site_id = validate(&appends, &meta)?;
        // A retry is recognised by what was asked, before sealing (whose nonces
        // differ every time).
        let fingerprint = fingerprint(&appends);
        let mut appends = appends;
        let mut sealed = self
            .inner
            .keys
            .seal(&self.inner.db, &mut appends, &mut side)
            .await?;
        let opened = std::mem::take(&mut sealed.opened);
        let request = AppendRequest {
            site_id,
            fingerprint,
            appends,
            meta,
            side,
            opened,
        };
        let (reply, outcome) = oneshot::channel();
        self.inner
            .writer
            .send((request, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        let outcome = outcome.await.map_err(|_| StoreError::Closed)??;
        self.inner.keys.committed(sealed, outcome.replayed);
        Ok(outcome)
    }

    /// Whether this store was given the master key: it can record and read a
    /// lead's personal values.
    #[must_use]
    pub fn seals(&self) -> bool {
        self.inner.options.master_key.is_some()
    }

    /// Makes what was deleted or overwritten in `tables` leave the database's
    /// files as far as the database can, after an erasure: on SQLite (whose
    /// `secure_delete` already zeroes freed content in the file) the write-ahead
    /// log is checkpointed into the file and emptied, which waits for readers;
    /// on PostgreSQL each table is rewritten into new files (`VACUUM FULL`, which
    /// locks it meanwhile: a plain VACUUM frees old row versions without erasing
    /// their bytes). Copies made before, such as backups and archived
    /// write-ahead log, are not reached. Answers what was done.
    ///
    /// # Errors
    /// Database errors.
    pub async fn scrub(&self, tables: &[&str]) -> Result<String, StoreError> {
        match &self.inner.db {
            Database::Sqlite(pool) => {
                let (busy, _, _): (i64, i64, i64) =
                    sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
                        .fetch_one(pool)
                        .await?;
                Ok(if busy == 0 {
                    "the write-ahead log was emptied into the database file".to_owned()
                } else {
                    "the write-ahead log could not be emptied while readers were busy: run this again when the server is quiet".to_owned()
                })
            }
            Database::Postgres(pool) => {
                for table in tables {
                    // Names of the crate's own tables, never the caller's input.
                    sqlx::query(&format!("VACUUM FULL {table}"))
                        .execute(pool)
                        .await?;
                }
                Ok(format!("rewrote (VACUUM FULL) {}", tables.join(", ")))
            }
        }
    }

    /// On SQLite, copies what the write-ahead log holds into the database file
    /// as far as it can without waiting for readers or writers (a passive
    /// checkpoint); nothing on PostgreSQL. See [`EventStore::scrub`] for the
    /// whole of it.
    ///
    /// # Errors
    /// Database errors.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        if let Database::Sqlite(pool) = &self.inner.db {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(pool)
                .await?;
        }
        Ok(())
    }

    /// The id of the master key this database's lead keys are sealed with, if
    /// any was ever given to it.
    ///
    /// # Errors
    /// Database errors.
    pub async fn master_key_id(&self) -> Result<Option<String>, StoreError> {
        keys::Keys::recorded(&self.inner.db).await
    }

    /// Opens the personal values of events read from the log (see
    /// [`crate::vault`]).
    async fn opened(
        &self,
        events: Result<Vec<RecordedEvent>, StoreError>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.keys.open(&self.inner.db, events?).await
    }

    /// Every event of one stream, oldest first, after version `after_version`
    /// (0 for all; a caller holding the state at version `n` reads only what came
    /// after it). One query.
    ///
    /// # Errors
    /// [`StoreError::StreamNotFound`] when the stream does not exist (asked from 0);
    /// [`StoreError::CorruptEvent`]; database errors.
    pub async fn read_stream(
        &self,
        stream: StreamKey,
        after_version: u64,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows: Vec<EventRow> = on_pool!(&self.inner.db, |pool| sqlx::query_as(sql::READ_STREAM)
            .bind(stream.stream_type.as_str())
            .bind(stream.id)
            .bind(i64::try_from(after_version).unwrap_or(i64::MAX))
            .fetch_all(pool)
            .await?);
        // A stream exists from its first event on: nothing from version 0 means none.
        if rows.is_empty() && after_version == 0 {
            return Err(StoreError::StreamNotFound(stream));
        }
        self.opened(rows::into_events(rows)).await
    }

    /// Every event of the streams of `stream_type` among `ids` (of the types
    /// `only`, or of every type when it is empty), up to and including position
    /// `up_to`, in position order, with their leads' personal values opened: what a
    /// fold of those streams had seen at `up_to`. One query per 256 streams.
    ///
    /// # Errors
    /// As [`EventStore::read_all`].
    pub async fn read_streams_up_to(
        &self,
        stream_type: StreamType,
        ids: &[uuid::Uuid],
        only: &[&str],
        up_to: Position,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut rows: Vec<EventRow> = Vec::new();
        for chunk in bulk::key_lists(ids) {
            let mut sql = format!(
                "{} ({})",
                sql::READ_STREAMS_UP_TO,
                bulk::numbered(3, chunk.len())
            );
            if !only.is_empty() {
                let types = bulk::numbered(3 + chunk.len(), only.len());
                sql.push_str(&format!(" AND event_type IN ({types})"));
            }
            let read: Vec<EventRow> = on_pool!(&self.inner.db, |pool| {
                let mut query = sqlx::query_as(&sql)
                    .bind(stream_type.as_str())
                    .bind(up_to.0);
                for id in &chunk {
                    query = query.bind(*id);
                }
                for event_type in only {
                    query = query.bind(*event_type);
                }
                query.fetch_all(pool).await?
            });
            rows.extend(read);
        }
        let mut events = rows::into_events(rows)?;
        events.sort_by_key(|event| event.position);
        self.opened(Ok(events)).await
    }

    /// The log's head as it was at `at`: the last position recorded at or before
    /// it ([`Position::START`] when none was). Positions are recorded in time
    /// order (each batch takes its time while it holds the log's head), so a
    /// binary search over them finds it in about twenty lookups by position.
    ///
    /// # Errors
    /// Database errors.
    pub async fn position_at(&self, at: DateTime<Utc>) -> Result<Position, StoreError> {
        // `low` was recorded by `at` (0: nothing yet); everything after `high`
        // was recorded after it.
        let (mut low, mut high) = (0, self.head().await?.0);
        while low < high {
            let middle = low + (high - low + 1) / 2;
            match self.recorded_at_or_after(Position(middle)).await? {
                Some(time) if time <= at => low = middle,
                _ => high = middle - 1,
            }
        }
        Ok(Position(low))
    }

    /// The last position committed together with `position` (in one batch, whose
    /// events share the time they were recorded at): a state of the log that
    /// readers could see, never one half-way through a transaction. `position`
    /// itself when nothing is recorded there.
    ///
    /// # Errors
    /// Database errors.
    pub async fn batch_end(&self, position: Position) -> Result<Position, StoreError> {
        if position.0 <= 0 {
            return Ok(Position::START);
        }
        match self.recorded_at_or_after(position).await? {
            Some(at) => Ok(self.position_at(at).await?.max(position)),
            None => Ok(position),
        }
    }

    /// When the first event at or after `position` was recorded; `None` past the
    /// head.
    async fn recorded_at_or_after(
        &self,
        position: Position,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(on_pool!(&self.inner.db, |pool| {
            sqlx::query_scalar(sql::RECORDED_AT_OR_AFTER)
                .bind(position.0)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// The stream's current version; 0 when it does not exist.
    ///
    /// # Errors
    /// Database errors.
    pub async fn stream_version(&self, stream: StreamKey) -> Result<u64, StoreError> {
        stream_version(&self.inner.db, stream).await
    }

    /// Up to `limit` events (at most [`MAX_PAGE`]) of all sites after `after`, in
    /// position order, with their leads' personal values opened (see
    /// [`crate::vault`]). Page through the log by passing the last position seen.
    ///
    /// # Errors
    /// [`StoreError::CorruptEvent`] naming the first unreadable row;
    /// [`StoreError::NoMasterKey`] for sealed values without the master key;
    /// database errors.
    pub async fn read_all(
        &self,
        after: Position,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.opened(self.read_all_stored(after, limit).await).await
    }

    /// As [`EventStore::read_all`], with the payloads as stored: personal values
    /// sealed, as the hash chain covers them.
    ///
    /// # Errors
    /// As [`EventStore::read_all`].
    pub async fn read_all_stored(
        &self,
        after: Position,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let limit = i64::from(limit.min(MAX_PAGE));
        let rows: Vec<EventRow> = on_pool!(&self.inner.db, |pool| sqlx::query_as(sql::READ_ALL)
            .bind(after.0)
            .bind(limit)
            .fetch_all(pool)
            .await?);
        rows::into_events(rows)
    }

    /// As [`EventStore::read_all`], for one site's events only.
    ///
    /// # Errors
    /// As [`EventStore::read_all`].
    pub async fn read_site(
        &self,
        site: SiteId,
        after: Position,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.opened(self.read_site_stored(site, after, limit).await)
            .await
    }

    /// As [`EventStore::read_site`], with the payloads as stored (see
    /// [`EventStore::read_all_stored`]).
    ///
    /// # Errors
    /// As [`EventStore::read_all`].
    pub async fn read_site_stored(
        &self,
        site: SiteId,
        after: Position,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let limit = i64::from(limit.min(MAX_PAGE));
        let rows: Vec<EventRow> = on_pool!(&self.inner.db, |pool| sqlx::query_as(sql::READ_SITE)
            .bind(site.as_uuid())
            .bind(after.0)
            .bind(limit)
            .fetch_all(pool)
            .await?);
        rows::into_events(rows)
    }

    /// The position of the last committed event ([`Position::START`] when empty).
    ///
    /// # Errors
    /// Database errors.
    pub async fn head(&self) -> Result<Position, StoreError> {
        let last: i64 = on_pool!(&self.inner.db, |pool| sqlx::query_scalar(sql::HEAD)
            .fetch_one(pool)
            .await?);
        advance(&self.inner.head, Position(last));
        Ok(Position(last))
    }

    /// Every event after `after`: first those already stored, then each new one as
    /// it is committed, by this process or another, without gaps or duplicates. The
    /// stream ends only with an error.
    pub fn subscribe(
        &self,
        after: Position,
    ) -> impl Stream<Item = Result<RecordedEvent, StoreError>> + Send + 'static {
        let store = self.clone();
        let mut news = self.inner.head.subscribe();
        let poll = self.inner.options.poll_interval;
        async_stream::try_stream! {
            let mut cursor = after;
            loop {
                // Mark what we know before reading, so an append committed while we
                // read still wakes us afterwards.
                news.borrow_and_update();
                let page = store.read_all(cursor, 1_000).await?;
                if page.is_empty() {
                    // Woken by this process's writer or a NOTIFY; the timeout covers
                    // appends nobody told us about.
                    let _ = tokio::time::timeout(poll, news.changed()).await;
                    continue;
                }
                for event in page {
                    cursor = event.position;
                    yield event;
                }
            }
        }
    }

    /// Recomputes the hash chain of one site, or of the whole log, and names the first
    /// position where it breaks. Reads in pages: memory stays flat.
    ///
    /// # Errors
    /// Database errors. A corrupt row is reported as a break, not an error.
    pub async fn verify(&self, site: Option<SiteId>) -> Result<VerifyReport, StoreError> {
        let mut verifier = match site {
            Some(_) => ChainVerifier::for_one_site(),
            None => ChainVerifier::for_whole_log(),
        };
        let mut cursor = Position::START;
        let mut unreadable = None;
        loop {
            // After an unreadable row, go one event at a time up to it: a break
            // before it is the first bad position.
            let limit = if unreadable.is_some() { 1 } else { 2_000 };
            let page = match site {
                Some(site) => self.read_site_stored(site, cursor, limit).await,
                None => self.read_all_stored(cursor, limit).await,
            };
            let page = match (page, &unreadable) {
                (Ok(page), _) => page,
                (Err(StoreError::CorruptEvent { position, reason }), None) => {
                    unreadable = Some((position, reason));
                    continue;
                }
                (Err(StoreError::CorruptEvent { position, .. }), Some((at, _)))
                    if position == *at =>
                {
                    break;
                }
                (Err(other), _) => return Err(other),
            };
            let Some(last) = page.last() else { break };
            cursor = last.position;
            for event in &page {
                verifier.check(event);
            }
            if verifier.failed() {
                break;
            }
        }
        if let (false, Some((position, reason))) = (verifier.failed(), unreadable) {
            return Ok(verifier.finish_unreadable(position, reason));
        }
        let heads = self.chain_heads(site).await?;
        Ok(verifier.finish(&heads))
    }

    /// Goes on verifying the whole log's hash chain from where `verifier` stopped
    /// (start with [`ChainVerifier::for_whole_log`]): reads only the events
    /// appended since, then compares every site's recorded head up to there.
    /// Once a break is found it stays found; later calls read nothing.
    ///
    /// # Errors
    /// Database errors. A corrupt row is reported as a break, not an error.
    pub async fn verify_since(
        &self,
        verifier: &mut ChainVerifier,
    ) -> Result<VerifyReport, StoreError> {
        self.verify_some(verifier, u64::MAX)
            .await
            .map(|(report, _)| report)
    }

    /// As [`EventStore::verify_since`], reading at most about `at_most` events
    /// this time; also answers whether it reached the head. A long log is thus
    /// verified again from the start a slice at a time, catching a change made
    /// to events verified long ago.
    ///
    /// # Errors
    /// As [`EventStore::verify_since`].
    pub async fn verify_some(
        &self,
        verifier: &mut ChainVerifier,
        at_most: u64,
    ) -> Result<(VerifyReport, bool), StoreError> {
        if verifier.failed() {
            return Ok((verifier.report(), true));
        }
        let head = self.head().await?;
        let stop = verifier
            .checked_to()
            .0
            .saturating_add(i64::try_from(at_most).unwrap_or(i64::MAX));
        while verifier.checked_to() < head && verifier.checked_to().0 < stop && !verifier.failed() {
            let page = match self.read_all_stored(verifier.checked_to(), 2_000).await {
                Ok(page) => page,
                Err(StoreError::CorruptEvent { position, reason }) => {
                    // Read up to it one by one: a break before it comes first.
                    let mut cursor = verifier.checked_to();
                    while let Ok(one) = self.read_all_stored(cursor, 1).await {
                        let Some(event) = one.first() else { break };
                        verifier.check(event);
                        cursor = event.position;
                    }
                    verifier.unreadable(position, reason);
                    break;
                }
                Err(other) => return Err(other),
            };
            if page.is_empty() {
                break;
            }
            for event in &page {
                verifier.check(event);
            }
        }
        let reached = verifier.checked_to() >= head || verifier.checked_to().0 < stop;
        if reached {
            // Every position up to the head read first is committed: one missing
            // is a removed event, the last ones included.
            verifier.expect_up_to(head);
        }
        let heads = self.chain_heads(None).await?;
        verifier.check_heads(&heads, verifier.checked_to());
        Ok((verifier.report(), reached))
    }

    /// The recorded head of each site's chain (or of one site's).
    ///
    /// # Errors
    /// Database errors.
    pub async fn chain_heads(&self, site: Option<SiteId>) -> Result<Vec<ChainHead>, StoreError> {
        let rows: Vec<ChainRow> = match site {
            None => on_pool!(&self.inner.db, |pool| sqlx::query_as(sql::CHAIN_HEADS)
                .fetch_all(pool)
                .await?),
            Some(site) => on_pool!(&self.inner.db, |pool| sqlx::query_as(
                sql::CHAIN_HEAD_OF_SITE
            )
            .bind(site.as_uuid())
            .fetch_all(pool)
            .await?),
        };
        rows.into_iter().map(ChainRow::into_head).collect()
    }
}

async fn stream_version(db: &Database, stream: StreamKey) -> Result<u64, StoreError> {
    let row: Option<(uuid::Uuid, i64)> = on_pool!(db, |pool| sqlx::query_as(sql::STREAM_VERSION)
        .bind(stream.stream_type.as_str())
        .bind(stream.id)
        .fetch_optional(pool)
        .await?);
    Ok(row.map_or(0, |(_, v)| u64::try_from(v).unwrap_or(0)))
}

/// Moves the known head forward (never back).
fn advance(head: &watch::Sender<Position>, to: Position) {
    head.send_if_modified(|known| {
        let moved = to > *known;
        if moved {
            *known = to;
        }
        moved
    });
}

/// Checks an append before it reaches the writer; returns its site.
fn validate(appends: &[StreamAppend], meta: &Metadata) -> Result<SiteId, StoreError> {
    let first = appends.first().ok_or(StoreError::EmptyAppend)?;
    if let Some(key) = &meta.idempotency_key {
        if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(StoreError::InvalidIdempotencyKey);
        }
    }
    for append in appends {
        if append.site_id != first.site_id {
            return Err(StoreError::CrossSite(append.stream));
        }
        if append.events.is_empty() {
            return Err(StoreError::EmptyAppend);
        }
        for event in &append.events {
            let known = catalog::lookup(&event.event_type).filter(|info| {
                info.schema_version == event.schema_version
                    && info.stream_type == append.stream.stream_type
            });
            if known.is_none() {
                return Err(StoreError::UnknownEventType {
                    event_type: event.event_type.clone(),
                    schema_version: event.schema_version,
                    stream_type: append.stream.stream_type.to_string(),
                });
            }
            if event.payload.len() > MAX_PAYLOAD_BYTES {
                return Err(StoreError::PayloadTooLarge {
                    event_type: event.event_type.clone(),
                    size: event.payload.len(),
                    limit: MAX_PAYLOAD_BYTES,
                });
            }
            if serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&event.payload)
                .is_err()
            {
                return Err(StoreError::InvalidPayload {
                    event_type: event.event_type.clone(),
                });
            }
        }
    }
    Ok(first.site_id)
}

/// Identifies an append's content, so a retry can be told from a reuse of its key.
/// The expected version is left out: a retry made after the first attempt landed
/// expects the version that attempt produced, and is still the same append.
fn fingerprint(appends: &[StreamAppend]) -> [u8; 32] {
    let mut h = Sha256::new();
    for append in appends {
        h.update(append.site_id.as_uuid().as_bytes());
        h.update(append.stream.stream_type.as_str().as_bytes());
        h.update(append.stream.id.as_bytes());
        for event in &append.events {
            for part in [event.event_type.as_bytes(), event.payload.as_bytes()] {
                h.update((part.len() as u64).to_be_bytes());
                h.update(part);
            }
            h.update(event.schema_version.to_be_bytes());
        }
    }
    h.finalize().into()
}
