//! Events stored at older schema versions read back through the upcasters.
//!
//! `fixtures/stored_v1_events.json` holds rows as an earlier build stored them:
//! `LeadCreated` v1 (tags as one comma-separated string, `assigned_to`) and
//! `LeadCommunicationLogged` v1 (`kind`, `outbound: bool`), hash chain included.

mod support;

use chrono::{DateTime, Utc};
use crm_events::backend_tests;
use crm_events::catalog::values::{Channel, Direction, Stage};
use crm_events::testing::TestDatabase;
use crm_events::{Database, DomainEvent, EventStore, ExpectedVersion, Position};
use serde::Deserialize;
use support::*;
use uuid::Uuid;

backend_tests!(stored_old_versions_read_back_upcast_and_the_chain_continues);

#[derive(Deserialize)]
struct StoredRow {
    position: i64,
    event_id: Uuid,
    site_id: Uuid,
    stream_type: String,
    stream_id: Uuid,
    stream_version: i64,
    event_type: String,
    schema_version: i32,
    payload: String,
    actor_id: Uuid,
    subject_id: Uuid,
    impersonation_id: Option<Uuid>,
    correlation_id: Uuid,
    causation_id: Option<Uuid>,
    idempotency_key: Option<String>,
    recorded_at: DateTime<Utc>,
    prev_hash: String,
    hash: String,
}

const INSERT: &str = "INSERT INTO events (position, event_id, site_id, stream_type, stream_id, \
    stream_version, event_type, schema_version, payload, actor_id, subject_id, impersonation_id, \
    correlation_id, causation_id, idempotency_key, recorded_at, prev_hash, hash) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)";

/// Restores the fixture's rows (and the bookkeeping an append would have written).
async fn restore_fixture(store: &EventStore) -> Vec<StoredRow> {
    let rows: Vec<StoredRow> =
        serde_json::from_str(include_str!("fixtures/stored_v1_events.json")).unwrap();
    let last = rows.last().unwrap();
    macro_rules! restore {
        ($pool:expr) => {{
            let mut tx = $pool.begin().await.unwrap();
            for r in &rows {
                sqlx::query(INSERT)
                    .bind(r.position)
                    .bind(r.event_id)
                    .bind(r.site_id)
                    .bind(&r.stream_type)
                    .bind(r.stream_id)
                    .bind(r.stream_version)
                    .bind(&r.event_type)
                    .bind(r.schema_version)
                    .bind(&r.payload)
                    .bind(r.actor_id)
                    .bind(r.subject_id)
                    .bind(r.impersonation_id)
                    .bind(r.correlation_id)
                    .bind(r.causation_id)
                    .bind(&r.idempotency_key)
                    .bind(r.recorded_at)
                    .bind(hex::decode(&r.prev_hash).unwrap())
                    .bind(hex::decode(&r.hash).unwrap())
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            sqlx::query("INSERT INTO streams (stream_type, stream_id, site_id, version) VALUES ($1, $2, $3, $4)")
                .bind(&last.stream_type)
                .bind(last.stream_id)
                .bind(last.site_id)
                .bind(last.stream_version)
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query("INSERT INTO site_chains (site_id, last_position, last_hash, event_count) VALUES ($1, $2, $3, $4)")
                .bind(last.site_id)
                .bind(last.position)
                .bind(hex::decode(&last.hash).unwrap())
                .bind(rows.len() as i64)
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query("UPDATE event_log_head SET last_position = $1 WHERE id = 1")
                .bind(last.position)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }};
    }
    match store.database() {
        Database::Sqlite(pool) => restore!(pool),
        Database::Postgres(pool) => restore!(pool),
    }
    rows
}

async fn stored_old_versions_read_back_upcast_and_the_chain_continues(db: &TestDatabase) {
    let store = db.store().await;
    let rows = restore_fixture(&store).await;
    let events = store.read_all(Position::START, 100).await.unwrap();
    assert_eq!(events.len(), 4);
    assert_eq!(
        events[0].schema_version, 1,
        "stored as written, not rewritten"
    );

    let DomainEvent::LeadCreated(created) = DomainEvent::decode(&events[0]).unwrap() else {
        panic!("LeadCreated expected");
    };
    assert_eq!(created.name, "Dana Whitfield");
    assert_eq!(created.tags, ["buyer", "first-time", "vip"]);
    assert_eq!(created.stage, Stage::New);
    assert_eq!(
        created.assigned_agent_id.map(|id| id.as_uuid()),
        Some(rows[0].actor_id)
    );

    let logged: Vec<_> = events[1..3]
        .iter()
        .map(|e| match DomainEvent::decode(e).unwrap() {
            DomainEvent::LeadCommunicationLogged(c) => (c.channel, c.direction, c.summary),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(logged[0].0, Channel::Call);
    assert_eq!(logged[0].1, Direction::Outbound);
    assert_eq!(
        logged[1],
        (
            Channel::Text,
            Direction::Inbound,
            "Dana asked for Saturday".into()
        )
    );
    assert_eq!(
        events[2].impersonation_id.map(|id| id.as_uuid()),
        rows[2].impersonation_id
    );

    assert!(matches!(
        DomainEvent::decode(&events[3]).unwrap(),
        DomainEvent::LeadStageChanged(_)
    ));
    let report = store.verify(None).await.unwrap();
    assert!(report.ok, "the stored chain is intact: {report:?}");

    // New events append after the old ones, at the current version, on the same chain.
    let site = events[0].site_id;
    let outcome = store
        .append(
            append(
                site,
                events[0].stream,
                ExpectedVersion::Exact(4),
                vec![tagged("hot")],
            ),
            meta(),
        )
        .await
        .unwrap();
    assert_eq!(outcome.last_position, Position(5));
    let report = store.verify(None).await.unwrap();
    assert!(report.ok && report.events_checked == 5, "{report:?}");
}
