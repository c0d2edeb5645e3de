//! `crm bench`: fills a fresh database with a realistic history, then measures the
//! core against what the same database does at best in the same run (a plain durable
//! single-row insert; a plain in-order scan of the events table).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crm_events::catalog::values::Stage;
use crm_events::ids::{LeadId, UserId};
use crm_events::{on_pool, EventStore, Position};
use crm_projections::audit_trail::{self, ChangeFilter};
use crm_projections::lead_manager::{self, LeadFilter, LeadSort, Owner};
use crm_projections::Projector;
use futures_util::StreamExt;
use serde::Serialize;

use crm::app::{App, AppError, Clock, RequestContext};
use crm::domain::lead::LeadEdit;
use crm::domain::values::{PersonName, Phone};

mod history;
mod http;

use history::{create_sites, fill, invalid, BenchSite};
use http::http_lead_pages;

/// Everything `crm bench --json` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub backend: &'static str,
    pub events: i64,
    pub fill_s: f64,
    pub raw_insert_per_s: f64,
    pub command_per_s: f64,
    pub command_per_s_c16: f64,
    /// Two servers (two stores on the database) with 16 writers each, on the
    /// same 8 leads, a fixed number of commands each.
    pub two_servers_command_per_s: f64,
    /// Of those, commands that failed for another reason than a conflict.
    pub two_servers_errors: u64,
    /// Deadlocks PostgreSQL counted meanwhile (0 on SQLite).
    pub two_servers_deadlocks: i64,
    pub raw_scan_per_s: f64,
    pub rebuild_per_s: f64,
    /// The database writing the rows the rebuild wrote, by itself: every
    /// projection table copied into a new one by `INSERT ... SELECT`, its
    /// secondary indexes built afterwards (as the rebuild builds its own), in
    /// one transaction; in events of the log per second.
    pub write_limit_per_s: f64,
    pub audit_query_p50_ms: f64,
    pub audit_query_p99_ms: f64,
    pub lead_page_p50_ms: f64,
    pub lead_page_p99_ms: f64,
    pub http_lead_page_p99_ms: f64,
    /// An agent's Lead Manager at a past position, folded from the log.
    pub past_lead_page_p50_ms: f64,
    pub past_lead_page_p99_ms: f64,
    pub peak_rss_mb: f64,
    pub command_vs_raw: f64,
    pub rebuild_vs_scan: f64,
    pub rebuild_vs_write_limit: f64,
}

/// Runs the whole benchmark on the (empty) database at `url`.
///
/// # Errors
/// A database that is not empty; store failures.
pub async fn run(
    url: &str,
    events: u64,
    phase: Duration,
    master_key: Option<crm_events::vault::MasterKey>,
) -> Result<Report, AppError> {
    // Sealing is part of every command and every read: the benchmark's leads are
    // sealed with the master key given, or one of its own.
    let master_key = match master_key {
        Some(key) => key,
        None => crm_events::vault::MasterKey::generate()
            .map_err(|e| AppError::Store(crm_events::StoreError::Sealing(e.to_string())))?,
    };
    let options = crm_events::StoreOptions {
        master_key: Some(master_key),
        ..crm_events::StoreOptions::default()
    };
    let store = EventStore::open_with(url, options.clone()).await?;
    if store.head().await? != Position::START {
        return Err(AppError::Conflict(
            "crm bench needs a fresh, empty database".into(),
        ));
    }
    let backend = store.database().backend_name();
    let started = Instant::now();
    let sites = create_sites(&store, events).await?;
    fill(&store, &sites, events).await?;
    let fill_s = started.elapsed().as_secs_f64();
    let total = store.head().await?.0;
    ready_for_reads(&store).await?;

    tracing::info!(
        events = total,
        peak_rss_mb = peak_rss_mb(),
        "filled; scanning the events table"
    );
    let raw_scan_per_s = raw_scan(&store, total).await?;
    starting("rebuilding every projection");
    let projector = Projector::open(store.clone(), crm_projections::all()).await?;
    let names = projector.names();
    let rebuild_started = Instant::now();
    projector.rebuild(&names, &|_| {}).await?;
    let rebuild_per_s = total as f64 / rebuild_started.elapsed().as_secs_f64();
    drop(projector);
    ready_for_reads(&store).await?;
    starting("the projections' rows written by the database itself");
    let write_limit_per_s = total as f64 / write_limit(&store).await?;

    let app = App::start(store.clone(), Clock::system()).await?;
    starting("raw inserts, one writer");
    let raw_insert_per_s = raw_inserts(&store, phase).await?;
    starting("lead commands, one writer");
    let command_per_s = commands(&app, &sites, 1, phase).await?;
    starting("lead commands, 16 writers");
    let command_per_s_c16 = commands(&app, &sites, 16, phase).await?;
    starting("lead commands, two servers with 16 writers each on the same leads");
    let (two_servers_command_per_s, two_servers_errors, two_servers_deadlocks) =
        two_servers(&app, url, &options, &sites).await?;
    starting("audit and Lead Manager queries");
    let (audit_query_p50_ms, audit_query_p99_ms) = audit_queries(&app, &sites).await?;
    let (lead_page_p50_ms, lead_page_p99_ms) = lead_pages(&app, &sites).await?;
    let (past_lead_page_p50_ms, past_lead_page_p99_ms) =
        past_lead_pages(&app, &sites, total).await?;
    starting("Lead Manager pages over HTTP, 16 clients");
    let http_lead_page_p99_ms = http_lead_pages(&app, &sites).await?;
    starting("exporting every audit trail");
    export_everything(&app, &sites).await?;
    Ok(Report {
        backend,
        events: total,
        fill_s,
        raw_insert_per_s,
        command_per_s,
        command_per_s_c16,
        two_servers_command_per_s,
        two_servers_errors,
        two_servers_deadlocks,
        raw_scan_per_s,
        rebuild_per_s,
        write_limit_per_s,
        audit_query_p50_ms,
        audit_query_p99_ms,
        lead_page_p50_ms,
        lead_page_p99_ms,
        http_lead_page_p99_ms,
        past_lead_page_p50_ms,
        past_lead_page_p99_ms,
        peak_rss_mb: peak_rss_mb(),
        command_vs_raw: command_per_s / raw_insert_per_s,
        rebuild_vs_scan: rebuild_per_s / raw_scan_per_s,
        rebuild_vs_write_limit: rebuild_per_s / write_limit_per_s,
    })
}

/// Seconds the database takes to write every projection row it holds by itself,
/// at best: each table copied into a fresh one without its secondary indexes,
/// which are built afterwards, all in one transaction, then dropped.
async fn write_limit(store: &EventStore) -> Result<f64, AppError> {
    let tables: Vec<&str> = crm_projections::all()
        .iter()
        .flat_map(|p| p.tables().iter().copied())
        .collect();
    let postgres = store.database().backend_name() == "postgres";
    let mut copy = String::new();
    let mut drop_copies = String::new();
    for table in &tables {
        let (create, indexes) = definitions(store, table, postgres).await?;
        copy.push_str(&format!(
            "{create}; INSERT INTO bench_copy_{table} SELECT * FROM {table}; {};\n",
            indexes.join("; ")
        ));
        drop_copies.push_str(&format!("DROP TABLE bench_copy_{table};\n"));
    }
    let script = format!("BEGIN; {copy} COMMIT;");
    let started = Instant::now();
    run_sql(store, &script).await?;
    let seconds = started.elapsed().as_secs_f64();
    run_sql(store, &drop_copies).await?;
    Ok(seconds)
}

/// The statements that create a copy of `table` (`bench_copy_<table>`) with its
/// columns and primary key, and its secondary indexes.
async fn definitions(
    store: &EventStore,
    table: &str,
    postgres: bool,
) -> Result<(String, Vec<String>), AppError> {
    let copy = format!("bench_copy_{table}");
    let rename = |sql: &str| {
        // `CREATE [UNIQUE] INDEX name ON [schema.]table ...`: a name and a table of
        // the copy's own.
        let (head, tail) = sql.split_once(" ON ").unwrap_or((sql, ""));
        let tail = tail
            .trim_start_matches("public.")
            .trim_start_matches(table)
            .to_owned();
        format!("{head}_bench_copy ON {copy}{tail}")
    };
    if postgres {
        let indexes: Vec<(String,)> = on_pool!(store.database(), |pool| sqlx::query_as(
            "SELECT i.indexdef FROM pg_indexes i \
             WHERE i.schemaname = current_schema() AND i.tablename = $1 \
             AND i.indexname NOT IN (SELECT conname FROM pg_constraint WHERE contype = 'p')"
        )
        .bind(table)
        .fetch_all(pool)
        .await?);
        // The primary key as the original has it, before the rows go in.
        let key: Option<(String,)> = on_pool!(store.database(), |pool| sqlx::query_as(
            "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c \
             WHERE c.conrelid = $1::regclass AND c.contype = 'p'"
        )
        .bind(table)
        .fetch_optional(pool)
        .await?);
        let mut create = format!("CREATE TABLE {copy} (LIKE {table} INCLUDING DEFAULTS)");
        if let Some((key,)) = key {
            create.push_str(&format!("; ALTER TABLE {copy} ADD {key}"));
        }
        Ok((create, indexes.iter().map(|(sql,)| rename(sql)).collect()))
    } else {
        let rows: Vec<(String, String)> = on_pool!(store.database(), |pool| sqlx::query_as(
            "SELECT type, sql FROM sqlite_master WHERE tbl_name = $1 AND sql IS NOT NULL"
        )
        .bind(table)
        .fetch_all(pool)
        .await?);
        let mut create = String::new();
        let mut indexes = Vec::new();
        for (kind, sql) in rows {
            if kind == "table" {
                create = sql.replacen(table, &copy, 1);
            } else if kind == "index" {
                indexes.push(rename(&sql));
            }
        }
        Ok((create, indexes))
    }
}

/// Settles the database after a bulk write, as it is in service: PostgreSQL gets
/// what autovacuum gives it (a bulk fill outruns autovacuum, and on a test machine
/// it may be switched off): the planner's statistics, and the visibility map that
/// lets a count read an index alone (the Lead Manager's counts per stage read 1,400
/// heap pages of an agent's leads without it: 8 ms against 0.7); SQLite's write-ahead log is checkpointed into the
/// database file, so reads do not wade through it. (SQLite plans without
/// statistics unless asked to gather them, so none are gathered.)
async fn ready_for_reads(store: &EventStore) -> Result<(), AppError> {
    let sql = match store.database() {
        crm_events::Database::Postgres(_) => "VACUUM (ANALYZE)",
        crm_events::Database::Sqlite(_) => "PRAGMA wal_checkpoint(TRUNCATE)",
    };
    run_sql(store, sql).await
}

/// Runs statements of the benchmark's own (no arguments; several at once).
async fn run_sql(store: &EventStore, sql: &str) -> Result<(), AppError> {
    on_pool!(store.database(), |pool| sqlx::raw_sql(sql)
        .execute(pool)
        .await
        .map(drop))?;
    Ok(())
}

/// The events table read in order, every column: events per second, the best of
/// three passes (what the database does at best, as for the other baselines).
async fn raw_scan(store: &EventStore, total: i64) -> Result<f64, AppError> {
    let mut best: f64 = 0.0;
    for _ in 0..3 {
        best = best.max(raw_scan_once(store, total).await?);
    }
    Ok(best)
}

async fn raw_scan_once(store: &EventStore, total: i64) -> Result<f64, AppError> {
    let started = Instant::now();
    let rows: u64 = on_pool!(store.database(), |pool| {
        let mut rows = sqlx::query(
            "SELECT position, event_id, site_id, stream_type, stream_id, stream_version, event_type, \
             schema_version, payload, actor_id, subject_id, impersonation_id, correlation_id, causation_id, \
             idempotency_key, recorded_at, prev_hash, hash FROM events ORDER BY position",
        )
        .fetch(pool);
        let mut n = 0u64;
        while let Some(row) = rows.next().await {
            row?;
            n += 1;
        }
        n
    });
    debug_assert_eq!(rows as i64, total);
    Ok(rows as f64 / started.elapsed().as_secs_f64())
}

/// Plain durable single-row inserts of an event's bytes into a bare table, one
/// writer, each its own transaction: inserts per second.
async fn raw_inserts(store: &EventStore, phase: Duration) -> Result<f64, AppError> {
    let payload = store
        .read_all_stored(Position(store.head().await?.0 - 1), 1)
        .await?
        .pop()
        .map(|e| e.payload)
        .unwrap_or_default();
    let bytes = format!("{payload}{}", "x".repeat(300));
    let db = store.database();
    run_sql(
        store,
        "CREATE TABLE IF NOT EXISTS bench_raw (id BIGINT PRIMARY KEY, body TEXT NOT NULL)",
    )
    .await?;
    let deadline = Instant::now() + phase;
    let started = Instant::now();
    let mut n: i64 = 0;
    while Instant::now() < deadline {
        n += 1;
        on_pool!(db, |pool| sqlx::query(
            "INSERT INTO bench_raw (id, body) VALUES ($1, $2)"
        )
        .bind(n)
        .bind(&bytes)
        .execute(pool)
        .await
        .map(drop))?;
    }
    let per_s = n as f64 / started.elapsed().as_secs_f64();
    run_sql(store, "DROP TABLE bench_raw").await?;
    Ok(per_s)
}

/// Lead updates through the whole path by `writers` concurrent writers, each on its
/// own lead, for `duration`: commands per second.
async fn commands(
    app: &App,
    sites: &[BenchSite],
    writers: usize,
    duration: Duration,
) -> Result<f64, AppError> {
    let mut leads = Vec::new();
    for w in 0..writers {
        let site = &sites[w % sites.len()];
        let ctx = site.agents[w % site.agents.len()].0.clone();
        let lead = new_lead(app, &ctx, &format!("Bench lead {w}")).await?;
        leads.push((ctx, lead));
    }
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let tasks = leads.into_iter().map(|(ctx, lead)| {
        let app = app.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut i = 0usize;
            while Instant::now() < deadline {
                app.edit_lead(&ctx, lead, lead_edit(i), None).await?;
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            Ok::<_, AppError>(())
        })
    });
    for task in futures_util::future::join_all(tasks).await {
        task.map_err(|e| AppError::Conflict(format!("a writer failed: {e}")))??;
    }
    // The projections' work is part of every command: the clock stops once they
    // reflect the last one.
    app.settle().await?;
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// The `i`-th edit of a benchmark writer, one event each, every one changing
/// something: every other one a new phone number (a personal value, sealed with
/// the lead's key), the others a stage, back and forth between two.
fn lead_edit(i: usize) -> LeadEdit {
    if i % 2 == 1 {
        let phone = Phone::parse(&format!("+1 555 01{:02}", (i / 2) % 100)).ok();
        return LeadEdit {
            phone: Some(phone),
            ..LeadEdit::default()
        };
    }
    let stage = if i % 4 == 0 {
        Stage::Contacted
    } else {
        Stage::Nurture
    };
    LeadEdit {
        stage: Some(stage),
        ..LeadEdit::default()
    }
}

/// A new lead of `ctx`'s, with only a name.
async fn new_lead(app: &App, ctx: &RequestContext, name: &str) -> Result<LeadId, AppError> {
    let new = crm::domain::lead::NewLead {
        name: PersonName::parse(name).map_err(invalid("name"))?,
        email: None,
        phone: None,
        source: None,
        stage: Stage::New,
        tags: crm::domain::values::Tags::default(),
        assigned_agent_id: None,
    };
    Ok(app.create_lead(ctx, new).await?.0)
}

/// How many commands each writer of [`two_servers`] makes.
const TWO_SERVERS_COMMANDS: usize = 100;

/// A second server (a store and an application of its own) on the same
/// database, and 16 writers on each, all on the same 8 leads, each making
/// [`TWO_SERVERS_COMMANDS`] stage changes without `If-Match` (a lost race is
/// decided again, as for a client): commands per second, failures other than a
/// conflict, and deadlocks PostgreSQL counted meanwhile.
async fn two_servers(
    app: &App,
    url: &str,
    options: &crm_events::StoreOptions,
    sites: &[BenchSite],
) -> Result<(f64, u64, i64), AppError> {
    let other = App::start(
        EventStore::open_with(url, options.clone()).await?,
        Clock::system(),
    )
    .await?;
    let site = &sites[0];
    let mut leads = Vec::new();
    for l in 0..8 {
        let ctx = site.agents[l % site.agents.len()].0.clone();
        let lead = new_lead(app, &ctx, &format!("Shared lead {l}")).await?;
        leads.push((ctx, lead));
    }
    let deadlocks_before = deadlocks(app.store()).await?;
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks = (0..32).map(|w| {
        let server = if w % 2 == 0 {
            app.clone()
        } else {
            other.clone()
        };
        let (ctx, lead) = leads[w % leads.len()].clone();
        let (done, errors) = (done.clone(), errors.clone());
        tokio::spawn(async move {
            for i in 0..TWO_SERVERS_COMMANDS {
                match server.edit_lead(&ctx, lead, lead_edit(i + w), None).await {
                    Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                    Err(AppError::Conflict(_)) => 0,
                    Err(error) => {
                        tracing::warn!(%error, "a command of the two-server phase failed");
                        errors.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        })
    });
    for task in futures_util::future::join_all(tasks).await {
        task.map_err(|e| AppError::Conflict(format!("a writer failed: {e}")))?;
    }
    app.settle().await?;
    other.settle().await?;
    let per_s = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    let deadlocks = deadlocks(app.store()).await? - deadlocks_before;
    Ok((per_s, errors.load(Ordering::Relaxed), deadlocks))
}

/// The deadlocks PostgreSQL has counted in this database (0 on SQLite).
async fn deadlocks(store: &EventStore) -> Result<i64, AppError> {
    Ok(match store.database() {
        crm_events::Database::Postgres(pool) => {
            sqlx::query_scalar(
                "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
            )
            .fetch_one(pool)
            .await?
        }
        crm_events::Database::Sqlite(_) => 0,
    })
}

fn percentiles(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    (at(0.50), at(0.99))
}

/// Audit-trail pages (session changes, filtered site changes): p50 and p99 in ms.
async fn audit_queries(app: &App, sites: &[BenchSite]) -> Result<(f64, f64), AppError> {
    let db = app.store().database();
    let mut samples = Vec::new();
    // The first 100 warm the pool's prepared statements and caches; they are not counted.
    for i in 0..500 {
        let site = &sites[i % sites.len()];
        let filter = match i % 4 {
            0 => ChangeFilter::default(),
            1 => ChangeFilter {
                impersonated: Some(true),
                ..ChangeFilter::default()
            },
            2 => ChangeFilter {
                actor_id: Some(site.admins[i % site.admins.len()].actor()),
                ..ChangeFilter::default()
            },
            _ => ChangeFilter {
                subject_id: Some(site.agents[i % site.agents.len()].0.actor()),
                ..ChangeFilter::default()
            },
        };
        let started = Instant::now();
        if i % 5 == 4 {
            audit_trail::sessions(
                db,
                site.id,
                &audit_trail::SessionFilter::default(),
                None,
                50,
            )
            .await?;
        } else {
            audit_trail::changes(db, site.id, &filter, None, 50).await?;
        }
        if i >= 100 {
            samples.push(started.elapsed().as_secs_f64() * 1_000.0);
        }
    }
    Ok(percentiles(samples))
}

/// The Lead Manager query of sample `i`: the `nth` agent of sample `i`'s site, each
/// sort in turn, a stage filter every third sample.
fn lead_query(sites: &[BenchSite], i: usize, nth: usize) -> (UserId, LeadFilter, LeadSort) {
    const SORTS: [LeadSort; 4] = [
        LeadSort::UpdatedAtDesc,
        LeadSort::Name,
        LeadSort::NextTaskDueAt,
        LeadSort::UpdatedAt,
    ];
    let site = &sites[i % sites.len()];
    let agent = site.agents[nth % site.agents.len()].0.actor();
    let mut filter = LeadFilter::of(Owner::AssignedTo(agent));
    if i % 3 == 0 {
        filter.stage = Some(Stage::ALL[i % Stage::ALL.len()]);
    }
    (agent, filter, SORTS[i % SORTS.len()])
}

/// Lead Manager pages (each sort, with and without a stage filter): p50 and p99 in ms.
async fn lead_pages(app: &App, sites: &[BenchSite]) -> Result<(f64, f64), AppError> {
    let db = app.store().database();
    let mut samples = Vec::new();
    // As above: the first 100 warm up.
    for i in 0..500 {
        let (_, filter, sort) = lead_query(sites, i, i);
        let started = Instant::now();
        lead_manager::list(db, &filter, sort, None, 50).await?;
        lead_manager::counts_by_stage(db, &filter).await?;
        if i >= 100 {
            samples.push(started.elapsed().as_secs_f64() * 1_000.0);
        }
    }
    Ok(percentiles(samples))
}

/// An agent's Lead Manager as it was at a past position (each sort, with and
/// without a stage filter, at positions spread over the log), folded from the log:
/// p50 and p99 in ms.
async fn past_lead_pages(
    app: &App,
    sites: &[BenchSite],
    total: i64,
) -> Result<(f64, f64), AppError> {
    let mut samples = Vec::new();
    // The first 40 warm up.
    for i in 0..240 {
        // Every agent of every site in turn.
        let (agent, filter, sort) = lead_query(sites, i, i / sites.len());
        let at = Position(total * (i as i64 % 10 + 1) / 10);
        let started = Instant::now();
        crm_projections::past::lead_manager(app.store(), agent, at, &filter, sort, None, 50)
            .await?;
        if i >= 40 {
            samples.push(started.elapsed().as_secs_f64() * 1_000.0);
        }
    }
    Ok(percentiles(samples))
}

/// Every site's whole audit trail through the CSV export, page by page, into a sink:
/// the export's memory must stay flat however long the trail.
async fn export_everything(app: &App, sites: &[BenchSite]) -> Result<(), AppError> {
    for site in sites {
        let db = app.store().database().clone();
        let mut chunks = Box::pin(crm::export::chunks(
            db,
            site.id,
            ChangeFilter::default(),
            crm::export::Format::Csv,
        ));
        while let Some(chunk) = chunks.next().await {
            std::hint::black_box(chunk?);
        }
    }
    Ok(())
}

/// The process's peak resident memory, from `/proc/self/status` (0 where there is none).
/// Logs the start of a phase, with the memory high-water mark so far.
fn starting(name: &str) {
    tracing::info!(peak_rss_mb = peak_rss_mb(), "{name}");
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("VmHWM:")
                    .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The report as aligned lines.
#[must_use]
pub fn describe(report: &Report) -> String {
    let value = serde_json::to_value(report).unwrap_or_default();
    let fields: BTreeMap<String, serde_json::Value> = value
        .as_object()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .collect();
    fields
        .iter()
        .map(|(k, v)| format!("{k:<24} {v}\n"))
        .collect()
}
