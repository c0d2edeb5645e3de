//! The PostgreSQL backend, with `synchronous_commit=on`. A batch costs a fixed
//! number of round trips whatever its size: loads go as arrays (`UNNEST`) and all
//! its writes in one statement. Appends of every process on the database serialize on the log head's
//! row lock, so positions commit in order; a `NOTIFY` at commit wakes the
//! subscribers of every process.

use std::str::FromStr;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use sqlx::{Executor, Row};
use tokio::sync::watch;
use uuid::Uuid;

use super::backend::{Backend, Own, STATEMENT_CACHE};
use super::plan::{Known, LogState, Needs, Writes};
use super::rows::{self, outcome_json, version_i64};
use super::side;
use super::tx::Tx;
use super::PING_IDLE_AFTER;
use crate::envelope::Position;
use crate::error::StoreError;

/// The channel appends are announced on; the payload is the new last position.
pub(crate) const CHANNEL: &str = "crm_events";

/// The `application_name` of the connections that listen on [`CHANNEL`], so that
/// a writer can tell whether any other process listens.
const LISTENER_NAME: &str = "crm-listener";

/// How often a writer looks for other processes listening.
const LOOK_FOR_LISTENERS_EVERY: Duration = Duration::from_secs(1);

/// Who listens to the appends. A `NOTIFY` costs every commit that sends it a
/// database-wide lock and wakes every listener: on this machine a single
/// writer's commands went from 0.63 to 0.78 of a raw insert without it. It only
/// spares other processes a wait (their subscribers poll every 100 ms, and their
/// reads ask the database for the head), and this process's own listener needs
/// none of its own appends: so appends are announced only while another process
/// listens.
#[derive(Debug)]
pub(crate) struct Listeners {
    /// This process's listening connection (its backend's pid; 0 while it has
    /// none).
    ours: AtomicI32,
    /// Whether another process listens, as last looked; true until looked, so
    /// that nobody misses an announcement meanwhile.
    others: AtomicBool,
}

impl Default for Listeners {
    fn default() -> Self {
        Self {
            ours: AtomicI32::new(0),
            others: AtomicBool::new(true),
        }
    }
}

/// Connects (the store then applies the log's migrations). Returns the pool
/// everyone reads through and the writer's backend.
pub(crate) async fn open(url: &str) -> Result<(PgPool, PgBackend), StoreError> {
    let options = PgConnectOptions::from_str(url)?
        .options([("synchronous_commit", "on")])
        .application_name("crm")
        .statement_cache_capacity(STATEMENT_CACHE);
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(5))
        // A connection used a moment ago is alive: ping (a round trip) only one
        // that has sat idle, which a restart of the server may have cut.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IDLE_AFTER {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect_with(options.clone())
        .await?;
    Ok((
        pool,
        PgBackend {
            own: Own::new(options),
            listeners: Arc::default(),
        },
    ))
}

/// Lets `role` serve the database with least privilege: it may only read and
/// append the events table (no UPDATE, DELETE or TRUNCATE, and, not owning it, it
/// cannot switch its triggers off); it reads and writes the store's bookkeeping,
/// credentials and sessions; it owns `disposable` (the projections' tables, which
/// a rebuild empties and re-indexes: creating an index needs CREATE on the
/// schema). Run by the database's owner; safe to run again after new migrations.
pub(crate) async fn grant_least_privilege(
    pool: &PgPool,
    role: &str,
    disposable: &[&str],
) -> Result<(), StoreError> {
    let valid = !role.is_empty()
        && role.len() <= 63
        && role.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(StoreError::Database(sqlx::Error::Protocol(format!(
            "{role:?} is not a role name (letters, digits and _)"
        ))));
    }
    let mut sql = format!(
        "GRANT USAGE, CREATE ON SCHEMA public TO {role}; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}; \
         REVOKE ALL ON events FROM {role}; \
         GRANT SELECT, INSERT ON events TO {role}; \
         REVOKE ALL ON audit_digests FROM {role}; \
         GRANT SELECT, INSERT ON audit_digests TO {role}; \
         REVOKE ALL ON _sqlx_migrations FROM {role}; \
         GRANT SELECT ON _sqlx_migrations TO {role}; \
         GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role};"
    );
    for table in disposable {
        sql.push_str(&format!(" ALTER TABLE {table} OWNER TO {role};"));
    }
    sqlx::raw_sql(&sql).execute(pool).await?;
    Ok(())
}

/// Starts the transaction, takes the log's write lock (the head's row lock) and
/// reads the last position, in one round trip: the simple query protocol takes both
/// statements at once.
const BEGIN_AND_LOCK_HEAD: &str = "BEGIN; \
     UPDATE event_log_head SET last_position = last_position WHERE id = 1 RETURNING last_position";

/// The writer's PostgreSQL connection. A batch costs a fixed number of round
/// trips whatever its size; on failure the connection is closed, which rolls back
/// what it left open.
#[derive(Debug)]
pub(crate) struct PgBackend {
    own: Own<PgConnection>,
    listeners: Arc<Listeners>,
}

impl PgBackend {
    pub(crate) fn listeners(&self) -> Arc<Listeners> {
        Arc::clone(&self.listeners)
    }
}

impl Backend for PgBackend {
    async fn lock_and_load(
        &mut self,
        needs: &Needs,
        known: &mut Known,
    ) -> Result<LogState, StoreError> {
        let conn = self.own.get().await?;
        // Without arguments, sqlx sends the text as a simple query.
        let rows = conn.fetch_all(BEGIN_AND_LOCK_HEAD).await?;
        let head: i64 = rows
            .first()
            .ok_or(StoreError::Database(sqlx::Error::RowNotFound))?
            .try_get(0)?;
        rows::load(&mut Tx::from(conn), Position(head), needs, known).await
    }

    async fn write_and_commit(&mut self, writes: &Writes) -> Result<(), StoreError> {
        let announce = self.listeners.others.load(Ordering::Relaxed);
        let conn = self.own.get().await?;
        if !write_batch(conn, writes, announce).await? {
            // The head's row is locked by this transaction: nobody else moved it.
            return Err(StoreError::Database(sqlx::Error::Protocol(
                "the log head moved while this transaction held its lock".into(),
            )));
        }
        side::write_all(&mut Tx::from(&mut *conn), &writes.side).await?;
        conn.execute("COMMIT").await?;
        Ok(())
    }

    async fn release(&mut self) -> Result<(), StoreError> {
        self.own.get().await?.execute("ROLLBACK").await?;
        Ok(())
    }

    /// One statement, committed on its own (one round trip instead of three); see
    /// [`write_batch`] for why it writes only where it was planned and cannot
    /// deadlock with another server's append.
    async fn write_alone(&mut self, writes: &Writes) -> Result<bool, StoreError> {
        let announce = self.listeners.others.load(Ordering::Relaxed);
        match write_batch(self.own.get().await?, writes, announce).await {
            Err(error) if error.is_unique_violation() => Ok(false),
            written => written,
        }
    }

    async fn abandon(&mut self) {
        self.own.close();
    }

    fn close(&mut self) {
        self.own.close();
    }
}

/// Writes a whole batch in one statement (one round trip): the events, the streams'
/// versions, the idempotency records, the sites' chain heads and the log head, and
/// announces the new head to every listener (delivered at commit). Answers whether
/// it wrote: only when the log head is still where the batch was planned from.
///
/// The statement's first part moves the log head, only from that position, and
/// every other part writes only if that part moved it: they read its result, so
/// they cannot write before it ran, whatever order PostgreSQL runs the parts of a
/// statement in (the manual leaves it unspecified). Moving the head takes the row
/// lock every append takes first; a statement that finds it held waits, and once
/// the holder commits finds the head elsewhere and writes nothing. So no append
/// ever holds an event's position while it waits for the head: two servers'
/// appends cannot deadlock.
async fn write_batch(
    conn: &mut PgConnection,
    writes: &Writes,
    announce: bool,
) -> Result<bool, StoreError> {
    let n = writes.events.len();
    let mut position = Vec::with_capacity(n);
    let mut event_id = Vec::with_capacity(n);
    let mut site_id = Vec::with_capacity(n);
    let mut stream_type = Vec::with_capacity(n);
    let mut stream_id = Vec::with_capacity(n);
    let mut stream_version = Vec::with_capacity(n);
    let mut event_type = Vec::with_capacity(n);
    let mut schema_version = Vec::with_capacity(n);
    let mut payload = Vec::with_capacity(n);
    let mut actor_id = Vec::with_capacity(n);
    let mut subject_id = Vec::with_capacity(n);
    let mut impersonation_id: Vec<Option<Uuid>> = Vec::with_capacity(n);
    let mut correlation_id = Vec::with_capacity(n);
    let mut causation_id: Vec<Option<Uuid>> = Vec::with_capacity(n);
    let mut idempotency_key: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut recorded_at: Vec<DateTime<Utc>> = Vec::with_capacity(n);
    let mut prev_hash = Vec::with_capacity(n);
    let mut hash = Vec::with_capacity(n);
    for e in &writes.events {
        position.push(e.position.0);
        event_id.push(e.event_id.as_uuid());
        site_id.push(e.site_id.as_uuid());
        stream_type.push(e.stream.stream_type.as_str());
        stream_id.push(e.stream.id);
        stream_version.push(version_i64(e.stream_version));
        event_type.push(e.event_type.as_str());
        schema_version.push(i32::from(e.schema_version));
        payload.push(e.payload.as_str());
        actor_id.push(e.actor_id.as_uuid());
        subject_id.push(e.subject_id.as_uuid());
        impersonation_id.push(e.impersonation_id.map(|id| id.as_uuid()));
        correlation_id.push(e.correlation_id.as_uuid());
        causation_id.push(e.causation_id);
        idempotency_key.push(e.idempotency_key.as_deref());
        recorded_at.push(e.recorded_at);
        prev_hash.push(e.prev_hash.to_vec());
        hash.push(e.hash.to_vec());
    }
    let (mut s_type, mut s_id, mut s_site, mut s_version) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (key, state) in &writes.streams {
        s_type.push(key.stream_type.as_str());
        s_id.push(key.id);
        s_site.push(state.site_id.as_uuid());
        s_version.push(version_i64(state.version));
    }
    let (mut i_site, mut i_key, mut i_fingerprint, mut i_outcome) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((site, key), record) in &writes.idempotency {
        i_site.push(site.as_uuid());
        i_key.push(key.as_str());
        i_fingerprint.push(record.fingerprint.to_vec());
        i_outcome.push(outcome_json(&record.outcome));
    }
    let (mut c_site, mut c_position, mut c_hash, mut c_count) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for head in &writes.chains {
        c_site.push(head.site_id.as_uuid());
        c_position.push(head.last_position.0);
        c_hash.push(head.last_hash.to_vec());
        c_count.push(version_i64(head.event_count));
    }
    let moved = sqlx::query(
        "WITH moved AS ( \
           UPDATE event_log_head SET last_position = $31 \
           WHERE id = 1 AND last_position = $33 RETURNING 1), \
         appended AS ( \
           INSERT INTO events (position, event_id, site_id, stream_type, stream_id, \
             stream_version, event_type, schema_version, payload, actor_id, subject_id, \
             impersonation_id, correlation_id, causation_id, idempotency_key, recorded_at, \
             prev_hash, hash) \
           SELECT * FROM UNNEST($1::bigint[], $2::uuid[], $3::uuid[], $4::text[], $5::uuid[], \
             $6::bigint[], $7::text[], $8::int[], $9::text[], $10::uuid[], $11::uuid[], \
             $12::uuid[], $13::uuid[], $14::uuid[], $15::text[], $16::timestamptz[], \
             $17::bytea[], $18::bytea[]) WHERE EXISTS (SELECT 1 FROM moved)), \
         versions AS ( \
           INSERT INTO streams (stream_type, stream_id, site_id, version) \
           SELECT * FROM UNNEST($19::text[], $20::uuid[], $21::uuid[], $22::bigint[]) \
           WHERE EXISTS (SELECT 1 FROM moved) \
           ON CONFLICT (stream_type, stream_id) DO UPDATE SET version = excluded.version), \
         keys AS ( \
           INSERT INTO idempotency_keys (site_id, key, fingerprint, outcome) \
           SELECT * FROM UNNEST($23::uuid[], $24::text[], $25::bytea[], $26::text[]) \
           WHERE EXISTS (SELECT 1 FROM moved)), \
         chains AS ( \
           INSERT INTO site_chains (site_id, last_position, last_hash, event_count) \
           SELECT * FROM UNNEST($27::uuid[], $28::bigint[], $29::bytea[], $30::bigint[]) \
           WHERE EXISTS (SELECT 1 FROM moved) \
           ON CONFLICT (site_id) DO UPDATE SET last_position = excluded.last_position, \
             last_hash = excluded.last_hash, event_count = excluded.event_count) \
         SELECT CASE WHEN $34 THEN pg_notify($32, $31::text) END FROM moved",
    )
    .bind(&position)
    .bind(&event_id)
    .bind(&site_id)
    .bind(&stream_type)
    .bind(&stream_id)
    .bind(&stream_version)
    .bind(&event_type)
    .bind(&schema_version)
    .bind(&payload)
    .bind(&actor_id)
    .bind(&subject_id)
    .bind(&impersonation_id)
    .bind(&correlation_id)
    .bind(&causation_id)
    .bind(&idempotency_key)
    .bind(&recorded_at)
    .bind(&prev_hash)
    .bind(&hash)
    .bind(&s_type)
    .bind(&s_id)
    .bind(&s_site)
    .bind(&s_version)
    .bind(&i_site)
    .bind(&i_key)
    .bind(&i_fingerprint)
    .bind(&i_outcome)
    .bind(&c_site)
    .bind(&c_position)
    .bind(&c_hash)
    .bind(&c_count)
    .bind(writes.head.0)
    .bind(CHANNEL)
    .bind(writes.head.0 - n as i64)
    .bind(announce)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(moved.is_some())
}

/// Follows the `NOTIFY`s of every process's appends and moves `head` forward,
/// reconnecting after a lost connection. Runs until the store aborts it.
pub(crate) async fn follow_notifications(
    pool: PgPool,
    head: watch::Sender<Position>,
    listeners: Arc<Listeners>,
) {
    // Connections of its own, named, so that a reconnection keeps the name. (One
    // it makes by itself has a pid this process does not know: counted as
    // another's, it only makes this process announce its appends.)
    let named = PgPoolOptions::new().max_connections(1).connect_lazy_with(
        pool.connect_options()
            .as_ref()
            .clone()
            .application_name(LISTENER_NAME),
    );
    loop {
        listeners.ours.store(0, Ordering::Relaxed);
        if let Ok(mut listener) = PgListener::connect_with(&named).await {
            let pid: Result<(i32,), sqlx::Error> = sqlx::query_as("SELECT pg_backend_pid()")
                .fetch_one(&mut listener)
                .await;
            if let Ok((pid,)) = pid {
                listeners.ours.store(pid, Ordering::Relaxed);
            }
            if listener.listen(CHANNEL).await.is_ok() {
                while let Ok(notification) = listener.recv().await {
                    if let Ok(position) = notification.payload().parse::<i64>() {
                        super::advance(&head, Position(position));
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Looks, every [`LOOK_FOR_LISTENERS_EVERY`], whether another process listens to
/// the appends on this database (see [`Listeners`]). One that starts listening
/// is announced to within that time; meanwhile its subscribers poll. A failed
/// look counts as someone listening. Runs until the store aborts it.
pub(crate) async fn watch_listeners(pool: PgPool, listeners: Arc<Listeners>) {
    loop {
        let others: Result<(bool,), sqlx::Error> = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name = $1 AND pid <> $2)",
        )
        .bind(LISTENER_NAME)
        .bind(listeners.ours.load(Ordering::Relaxed))
        .fetch_one(&pool)
        .await;
        listeners
            .others
            .store(others.map_or(true, |(others,)| others), Ordering::Relaxed);
        tokio::time::sleep(LOOK_FOR_LISTENERS_EVERY).await;
    }
}
