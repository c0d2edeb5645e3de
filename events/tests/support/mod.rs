//! Helpers shared by the store tests.

#![allow(dead_code)]

use crm_events::catalog::lead::{LeadCreated, LeadTagAdded};
use crm_events::catalog::values::Stage;
use crm_events::ids::{LeadId, SiteId, UserId};
use crm_events::{
    DomainEvent, EventStore, ExpectedVersion, Metadata, NewEvent, StreamAppend, StreamKey,
    StreamType,
};

pub fn lead_stream() -> StreamKey {
    StreamKey::new(StreamType::Lead, LeadId::generate().as_uuid())
}

pub fn created(name: &str) -> NewEvent {
    DomainEvent::from(LeadCreated {
        name: name.into(),
        email: None,
        phone: None,
        source: Some("zillow".into()),
        stage: Stage::New,
        tags: vec!["buyer".into()],
        assigned_agent_id: None,
    })
    .to_new_event()
}

pub fn tagged(tag: &str) -> NewEvent {
    DomainEvent::from(LeadTagAdded { tag: tag.into() }).to_new_event()
}

pub fn append(
    site: SiteId,
    stream: StreamKey,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> StreamAppend {
    StreamAppend {
        site_id: site,
        stream,
        expected,
        events,
    }
}

pub fn meta() -> Metadata {
    Metadata::acting_as_self(UserId::generate())
}

/// Appends `n` tag events to a new lead stream of `site`.
pub async fn fill(store: &EventStore, site: SiteId, n: usize) -> StreamKey {
    let stream = lead_stream();
    let mut events = vec![created("Fill")];
    events.extend((1..n).map(|i| tagged(&format!("t{i}"))));
    store
        .append(
            append(site, stream, ExpectedVersion::NoStream, events),
            meta(),
        )
        .await
        .unwrap();
    stream
}

/// Runs raw SQL on whichever database the store uses.
pub async fn exec(store: &EventStore, sql: &str) -> Result<u64, sqlx::Error> {
    match store.database() {
        crm_events::Database::Sqlite(pool) => sqlx::raw_sql(sql)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()),
        crm_events::Database::Postgres(pool) => sqlx::raw_sql(sql)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()),
    }
}

/// Returns once some session of the database is waiting for a lock that the
/// session `holder` holds, as PostgreSQL itself reports it; panics if none does
/// within 30 seconds. On SQLite (`holder` is `None`) there is no outside view of a
/// waiting writer, and it returns at once.
pub async fn until_blocked_by(store: &EventStore, holder: Option<i32>) {
    let (crm_events::Database::Postgres(pool), Some(holder)) = (store.database(), holder) else {
        return;
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
        )
        .bind(holder)
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no session came to wait for the held lock"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
