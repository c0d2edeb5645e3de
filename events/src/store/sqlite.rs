//! The SQLite backend: one file in WAL mode with `synchronous=FULL`, so an
//! acknowledged append survives power loss. This process's appends all go through
//! one writer task; other processes wait on the busy timeout, never "database is
//! locked".

use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::Sqlite;

use super::backend::{Backend, Own, STATEMENT_CACHE};
use super::bulk::Rows;
use super::plan::{IdempotencyRecord, Known, LogState, Needs, Writes};
use super::rows::{self, outcome_json, version_i64};
use super::side;
use super::tx::Tx;
use crate::envelope::Position;
use crate::error::StoreError;

/// Opens (creating if needed) the database file (the store then applies the
/// log's migrations). Returns the pool everyone reads through and the writer's
/// backend.
pub(crate) async fn open(url: &str) -> Result<(SqlitePool, SqliteBackend), StoreError> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        // Pages of 2 KiB for a new database (an existing one keeps its own): an
        // append touches one leaf in each of several large indexes, far apart, and
        // every touched page goes whole into the write-ahead log at each commit.
        // At 1,000,000 events, 16 writers committed 2.4 times the raw insert rate
        // with 4 KiB pages and 3.0 times with 2 KiB; 1 KiB made the rebuild and
        // the queries slower.
        .page_size(2048)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(30))
        .foreign_keys(true)
        // Deleted and overwritten content is zeroed in the file, not left in free
        // space: an erased lead's key and personal values do not linger.
        .pragma("secure_delete", "on")
        .statement_cache_capacity(STATEMENT_CACHE)
        // Rows cross from the connection's thread in a channel: a deep one lets a
        // long read run ahead instead of waking the reader row by row.
        .row_buffer_size(1024);
    // An in-memory database exists once per connection: keep exactly one, forever.
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let pool = SqlitePoolOptions::new()
        .max_connections(if in_memory { 1 } else { 8 })
        .min_connections(u32::from(in_memory))
        .idle_timeout((!in_memory).then_some(Duration::from_secs(600)))
        .max_lifetime(None)
        // A connection to a local file does not go stale: no ping (a hand-off to
        // the connection's thread) each time one is taken.
        .test_before_acquire(false)
        .connect_with(options.clone())
        .await?;
    let backend = SqliteBackend {
        own: (!in_memory).then(|| Own::new(options.pragma("cache_size", WRITER_CACHE_KIB))),
        pool: pool.clone(),
        borrowed: None,
    };
    Ok((pool, backend))
}

/// The writer connection's page cache, in KiB (SQLite's negative `cache_size`):
/// room for the inner pages of every index an append touches at millions of events.
const WRITER_CACHE_KIB: &str = "-32768";

/// The writer's scripts are kept prepared up to this many statements: a batch of a
/// dozen commands cuts each table's rows into a few multi-row statements, and
/// preparing them again for every batch took a third of its time. (The writer's
/// scripts come in few shapes; a catch-up's, on the readers' connections, rarely
/// repeat, and are kept only when short.)
const WRITER_CACHED_SCRIPT_STATEMENTS: usize = 40;

/// Starts the transaction, takes the log's write lock and reads the last position,
/// in one hand-off. `IMMEDIATE` takes SQLite's write lock at once (waiting on the
/// busy timeout) rather than failing on a later upgrade.
const BEGIN_AND_LOCK_HEAD: &str = "BEGIN IMMEDIATE; \
     UPDATE event_log_head SET last_position = last_position WHERE id = 1 \
     RETURNING last_position";

/// The writer's SQLite connection. Loads and writes go a table at a time
/// ([`super::bulk`]), so a batch costs a few statements whatever its size, and
/// the writes run with the commit as one script. The transaction is begun and
/// committed by statements of its own (sqlx's `begin` and `commit` would each be
/// a hand-off to the connection's thread).
#[derive(Debug)]
pub(crate) struct SqliteBackend {
    /// The writer's own connection; `None` for an in-memory database, which
    /// exists only in its pool's one connection: the writer borrows it for each
    /// batch.
    own: Option<Own<SqliteConnection>>,
    pool: SqlitePool,
    borrowed: Option<PoolConnection<Sqlite>>,
}

impl SqliteBackend {
    async fn connection(&mut self) -> Result<&mut SqliteConnection, StoreError> {
        if let Some(own) = self.own.as_mut() {
            return own.get().await;
        }
        if self.borrowed.is_none() {
            self.borrowed = Some(self.pool.acquire().await?);
        }
        self.borrowed.as_deref_mut().ok_or(StoreError::Closed)
    }

    /// A transaction's writes on the writer's connection, kept prepared.
    async fn writing(&mut self) -> Result<Tx<'_>, StoreError> {
        let mut tx = Tx::from(self.connection().await?);
        tx.cached_script_statements = WRITER_CACHED_SCRIPT_STATEMENTS;
        Ok(tx)
    }

    /// Gives a borrowed connection back to the pool.
    fn done(&mut self) {
        self.borrowed = None;
    }
}

impl Backend for SqliteBackend {
    async fn lock_and_load(
        &mut self,
        needs: &Needs,
        known: &mut Known,
    ) -> Result<LogState, StoreError> {
        let mut tx = self.writing().await?;
        let head: Vec<(i64,)> = tx.fetch_all(BEGIN_AND_LOCK_HEAD, &[]).await?;
        let (head,) = head
            .first()
            .copied()
            .ok_or(StoreError::Database(sqlx::Error::RowNotFound))?;
        rows::load(&mut tx, Position(head), needs, known).await
    }

    async fn write_and_commit(&mut self, writes: &Writes) -> Result<(), StoreError> {
        let mut tx = self.writing().await?;
        write_batch(&mut tx, writes).await?;
        side::write_all(&mut tx, &writes.side).await?;
        tx.pending.push_plain("COMMIT", &[]);
        tx.flush().await?;
        self.done();
        Ok(())
    }

    async fn release(&mut self) -> Result<(), StoreError> {
        sqlx::query("ROLLBACK")
            .execute(self.connection().await?)
            .await?;
        self.done();
        Ok(())
    }

    /// Begin, writes and commit are one script (one hand-off instead of two). It
    /// writes at the position after the head the writer last left: if another
    /// process appended in between, that position is taken, the script fails on
    /// the events' key and is rolled back.
    async fn write_alone(&mut self, writes: &Writes) -> Result<bool, StoreError> {
        let written = async {
            let mut tx = self.writing().await?;
            tx.pending.push_plain("BEGIN IMMEDIATE", &[]);
            write_batch(&mut tx, writes).await?;
            tx.pending.push_plain("COMMIT", &[]);
            tx.flush().await
        }
        .await;
        match written {
            Ok(()) => {
                self.done();
                Ok(true)
            }
            Err(error) if error.is_unique_violation() => {
                sqlx::query("ROLLBACK")
                    .execute(self.connection().await?)
                    .await?;
                self.done();
                Ok(false)
            }
            Err(other) => Err(other),
        }
    }

    async fn abandon(&mut self) {
        if let Ok(conn) = self.connection().await {
            // Fails harmlessly when the transaction never began or already ended.
            let _ = sqlx::query("ROLLBACK").execute(conn).await;
        }
        if let Some(own) = self.own.as_mut() {
            own.close();
        }
        self.done();
    }

    fn close(&mut self) {
        if let Some(own) = self.own.as_mut() {
            own.close();
        }
        self.done();
    }
}

/// Writes a batch: the events, the streams' versions, the idempotency records, the
/// sites' chain heads and the log head.
async fn write_batch(tx: &mut Tx<'_>, writes: &Writes) -> Result<(), StoreError> {
    let mut events = Rows::new(
        "INSERT INTO events (position, event_id, site_id, stream_type, stream_id, \
         stream_version, event_type, schema_version, payload, actor_id, subject_id, \
         impersonation_id, correlation_id, causation_id, idempotency_key, recorded_at, \
         prev_hash, hash)",
        18,
        "",
    );
    for e in &writes.events {
        events.push([
            e.position.0.into(),
            e.event_id.as_uuid().into(),
            e.site_id.as_uuid().into(),
            e.stream.stream_type.as_str().into(),
            e.stream.id.into(),
            version_i64(e.stream_version).into(),
            e.event_type.as_str().into(),
            i32::from(e.schema_version).into(),
            e.payload.as_str().into(),
            e.actor_id.as_uuid().into(),
            e.subject_id.as_uuid().into(),
            e.impersonation_id.map(|id| id.as_uuid()).into(),
            e.correlation_id.as_uuid().into(),
            e.causation_id.into(),
            e.idempotency_key.as_deref().into(),
            e.recorded_at.into(),
            e.prev_hash.to_vec().into(),
            e.hash.to_vec().into(),
        ]);
    }
    events.write(tx).await?;

    let mut streams = Rows::new(
        "INSERT INTO streams (stream_type, stream_id, site_id, version)",
        4,
        "ON CONFLICT (stream_type, stream_id) DO UPDATE SET version = excluded.version",
    );
    for (key, state) in &writes.streams {
        streams.push([
            key.stream_type.as_str().into(),
            key.id.into(),
            state.site_id.as_uuid().into(),
            version_i64(state.version).into(),
        ]);
    }
    streams.write(tx).await?;

    let mut idempotency = Rows::new(
        "INSERT INTO idempotency_keys (site_id, key, fingerprint, outcome)",
        4,
        "",
    );
    for (
        (site, key),
        IdempotencyRecord {
            fingerprint,
            outcome,
        },
    ) in &writes.idempotency
    {
        idempotency.push([
            site.as_uuid().into(),
            key.as_str().into(),
            fingerprint.to_vec().into(),
            outcome_json(outcome).into(),
        ]);
    }
    idempotency.write(tx).await?;

    let mut chains = Rows::new(
        "INSERT INTO site_chains (site_id, last_position, last_hash, event_count)",
        4,
        "ON CONFLICT (site_id) DO UPDATE SET last_position = excluded.last_position, \
         last_hash = excluded.last_hash, event_count = excluded.event_count",
    );
    for head in &writes.chains {
        chains.push([
            head.site_id.as_uuid().into(),
            head.last_position.0.into(),
            head.last_hash.to_vec().into(),
            version_i64(head.event_count).into(),
        ]);
    }
    chains.write(tx).await?;

    tx.execute(
        "UPDATE event_log_head SET last_position = $1 WHERE id = 1",
        &[writes.head.0.into()],
    )
    .await
}
