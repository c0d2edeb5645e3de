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
