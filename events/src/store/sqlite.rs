//! The SQLite backend: one file in WAL mode with `synchronous=FULL`, so an
//! acknowledged append survives power loss. This process's appends all go through
//! one writer task; other processes wait on the busy timeout, never "database is
//! locked".

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::bulk::Rows;
use super::hook::{AppendHook, Tx};
use super::plan::{IdempotencyRecord, Known, Loaded, Needs, Writes};
use super::rows::{self, outcome_json, version_i64};
use super::sql;
use crate::envelope::Position;
use crate::error::StoreError;

static MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");

/// Prepared statements kept per connection: each table written in bulk has up to
/// seven shapes (see [`super::bulk`]).
pub(crate) const STATEMENT_CACHE: usize = 400;

/// Opens (creating if needed) the database file and applies the migrations.
pub(crate) async fn open(url: &str) -> Result<SqlitePool, StoreError> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(30))
        .foreign_keys(true)
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
        .connect_with(options)
        .await?;
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}

/// Runs one batch in one transaction: lock, load, plan, write, commit. Loads and
/// writes go a table at a time ([`bulk`]), so a batch costs a few statements
/// whatever its size.
pub(crate) async fn commit_batch(
    pool: &SqlitePool,
    needs: &Needs,
    known: &mut Known,
    plan: impl FnOnce(Loaded) -> Writes,
    hook: Option<&dyn AppendHook>,
) -> Result<Position, StoreError> {
    let mut conn = pool.begin().await?;
    // The first statement writes, so the transaction takes SQLite's write lock at once
    // (waiting on the busy timeout) rather than failing on a later upgrade.
    let head: i64 = sqlx::query_scalar(sql::LOCK_HEAD)
        .fetch_one(&mut *conn)
        .await?;
    let mut tx = Tx::from(&mut *conn);
    let loaded = rows::load(&mut tx, Position(head), needs, known).await?;
    let writes = plan(loaded);
    if writes.events.is_empty() {
        conn.rollback().await?;
        return Ok(writes.head);
    }
    write_batch(&mut tx, &writes).await?;
    if let Some(hook) = hook {
        hook.appended(&mut tx, &writes.events).await?;
    }
    tx.flush().await?;
    conn.commit().await?;
    known.learn(&writes);
    Ok(writes.head)
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
