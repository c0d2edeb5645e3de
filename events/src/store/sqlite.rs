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
use uuid::Uuid;

use super::hook::{AppendHook, Tx};
use super::plan::{IdempotencyRecord, Loaded, Needs, StreamState, Writes};
use super::rows::{outcome_json, version_i64, ChainRow, IdempotencyRow};
use super::sql;
use crate::envelope::Position;
use crate::error::StoreError;
use crate::ids::SiteId;

static MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");

/// Opens (creating if needed) the database file and applies the migrations.
pub(crate) async fn open(url: &str) -> Result<SqlitePool, StoreError> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(30))
        .foreign_keys(true);
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

/// Runs one batch in one transaction: lock, load, plan, write, commit.
pub(crate) async fn commit_batch(
    pool: &SqlitePool,
    needs: &Needs,
    plan: impl FnOnce(Loaded) -> Writes,
    hook: Option<&dyn AppendHook>,
) -> Result<Position, StoreError> {
    let mut tx = pool.begin().await?;
    // The first statement writes, so the transaction takes SQLite's write lock at once
    // (waiting on the busy timeout) rather than failing on a later upgrade.
    let head: i64 = sqlx::query_scalar(sql::LOCK_HEAD)
        .fetch_one(&mut *tx)
        .await?;
    let mut loaded = Loaded {
        head: Position(head),
        ..Loaded::default()
    };
    for key in &needs.streams {
        let row: Option<(Uuid, i64)> = sqlx::query_as(sql::STREAM_VERSION)
            .bind(key.stream_type.as_str())
            .bind(key.id)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some((site, version)) = row {
            loaded.streams.insert(
                *key,
                StreamState {
                    site_id: SiteId::from_uuid(site),
                    version: u64::try_from(version).unwrap_or(0),
                },
            );
        }
    }
    for (site, key) in &needs.idempotency {
        let row: Option<IdempotencyRow> = sqlx::query_as(
            "SELECT site_id, key, fingerprint, outcome FROM idempotency_keys \
             WHERE site_id = $1 AND key = $2",
        )
        .bind(site.as_uuid())
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = row {
            let (id, record) = row.into_record()?;
            loaded.idempotency.insert(id, record);
        }
    }
    for site in &needs.sites {
        let row: Option<ChainRow> = sqlx::query_as(sql::CHAIN_HEAD_OF_SITE)
            .bind(site.as_uuid())
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = row {
            loaded.chains.insert(*site, row.into_head()?);
        }
    }

    let writes = plan(loaded);
    if writes.events.is_empty() {
        tx.rollback().await?;
        return Ok(writes.head);
    }
    for e in &writes.events {
        sqlx::query(
            "INSERT INTO events (position, event_id, site_id, stream_type, stream_id, \
             stream_version, event_type, schema_version, payload, actor_id, subject_id, \
             impersonation_id, correlation_id, causation_id, idempotency_key, recorded_at, \
             prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
        )
        .bind(e.position.0)
        .bind(e.event_id.as_uuid())
        .bind(e.site_id.as_uuid())
        .bind(e.stream.stream_type.as_str())
        .bind(e.stream.id)
        .bind(version_i64(e.stream_version))
        .bind(&e.event_type)
        .bind(i32::from(e.schema_version))
        .bind(&e.payload)
        .bind(e.actor_id.as_uuid())
        .bind(e.subject_id.as_uuid())
        .bind(e.impersonation_id.map(|id| id.as_uuid()))
        .bind(e.correlation_id.as_uuid())
        .bind(e.causation_id)
        .bind(&e.idempotency_key)
        .bind(e.recorded_at)
        .bind(e.prev_hash.as_slice())
        .bind(e.hash.as_slice())
        .execute(&mut *tx)
        .await?;
    }
    for (key, state) in &writes.streams {
        sqlx::query(
            "INSERT INTO streams (stream_type, stream_id, site_id, version) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (stream_type, stream_id) DO UPDATE SET version = excluded.version",
        )
        .bind(key.stream_type.as_str())
        .bind(key.id)
        .bind(state.site_id.as_uuid())
        .bind(version_i64(state.version))
        .execute(&mut *tx)
        .await?;
    }
    for (
        (site, key),
        IdempotencyRecord {
            fingerprint,
            outcome,
        },
    ) in &writes.idempotency
    {
        sqlx::query(
            "INSERT INTO idempotency_keys (site_id, key, fingerprint, outcome) VALUES ($1, $2, $3, $4)",
        )
        .bind(site.as_uuid())
        .bind(key)
        .bind(fingerprint.as_slice())
        .bind(outcome_json(outcome))
        .execute(&mut *tx)
        .await?;
    }
    for head in &writes.chains {
        sqlx::query(
            "INSERT INTO site_chains (site_id, last_position, last_hash, event_count) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (site_id) DO UPDATE SET \
             last_position = excluded.last_position, last_hash = excluded.last_hash, \
             event_count = excluded.event_count",
        )
        .bind(head.site_id.as_uuid())
        .bind(head.last_position.0)
        .bind(head.last_hash.as_slice())
        .bind(version_i64(head.event_count))
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("UPDATE event_log_head SET last_position = $1 WHERE id = 1")
        .bind(writes.head.0)
        .execute(&mut *tx)
        .await?;
    if let Some(hook) = hook {
        hook.appended(&mut Tx::Sqlite(&mut tx), &writes.events)
            .await?;
    }
    tx.commit().await?;
    Ok(writes.head)
}
