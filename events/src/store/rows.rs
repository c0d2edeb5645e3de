//! Rows as both databases return them, their conversion into envelopes, and the
//! loading of what a batch needs to know.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::bulk::{fetch_in, Bind};
use super::plan::{Known, LogState, Needs, StreamState};
use super::tx::Tx;

use crate::envelope::{AppendOutcome, Position, RecordedEvent, StreamKey, StreamType};
use crate::error::StoreError;
use crate::hash::ChainHead;
use crate::ids::{CorrelationId, EventId, ImpersonationId, SiteId, UserId};

/// One row of `events`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct EventRow {
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
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
}

impl TryFrom<EventRow> for RecordedEvent {
    type Error = StoreError;

    fn try_from(row: EventRow) -> Result<Self, StoreError> {
        let position = Position(row.position);
        let corrupt = |reason: String| StoreError::CorruptEvent { position, reason };
        let stream_type = StreamType::parse(&row.stream_type)
            .ok_or_else(|| corrupt(format!("unknown stream type {:?}", row.stream_type)))?;
        Ok(RecordedEvent {
            position,
            event_id: EventId::from_uuid(row.event_id),
            site_id: SiteId::from_uuid(row.site_id),
            stream: StreamKey::new(stream_type, row.stream_id),
            stream_version: u64::try_from(row.stream_version)
                .map_err(|_| corrupt(format!("negative stream version {}", row.stream_version)))?,
            event_type: row.event_type,
            schema_version: u16::try_from(row.schema_version)
                .map_err(|_| corrupt(format!("bad schema version {}", row.schema_version)))?,
            payload: row.payload,
            actor_id: UserId::from_uuid(row.actor_id),
            subject_id: UserId::from_uuid(row.subject_id),
            impersonation_id: row.impersonation_id.map(ImpersonationId::from_uuid),
            correlation_id: CorrelationId::from_uuid(row.correlation_id),
            causation_id: row.causation_id,
            idempotency_key: row.idempotency_key,
            recorded_at: row.recorded_at,
            prev_hash: hash32(&row.prev_hash)
                .ok_or_else(|| corrupt("prev_hash is not 32 bytes".into()))?,
            hash: hash32(&row.hash).ok_or_else(|| corrupt("hash is not 32 bytes".into()))?,
        })
    }
}

/// Converts a page of rows, failing on the first corrupt one.
pub(crate) fn into_events(rows: Vec<EventRow>) -> Result<Vec<RecordedEvent>, StoreError> {
    rows.into_iter().map(RecordedEvent::try_from).collect()
}

/// One row of `site_chains`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ChainRow {
    site_id: Uuid,
    last_position: i64,
    last_hash: Vec<u8>,
    event_count: i64,
}

impl ChainRow {
    pub(crate) fn into_head(self) -> Result<ChainHead, StoreError> {
        Ok(ChainHead {
            site_id: SiteId::from_uuid(self.site_id),
            last_position: Position(self.last_position),
            last_hash: hash32(&self.last_hash).ok_or_else(|| StoreError::CorruptEvent {
                position: Position(self.last_position),
                reason: "recorded chain head is not 32 bytes".into(),
            })?,
            event_count: u64::try_from(self.event_count).unwrap_or(0),
        })
    }
}

/// One row of `idempotency_keys`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct IdempotencyRow {
    pub site_id: Uuid,
    pub key: String,
    pub fingerprint: Vec<u8>,
    pub outcome: String,
}

impl IdempotencyRow {
    pub(crate) fn into_record(
        self,
    ) -> Result<((SiteId, String), super::plan::IdempotencyRecord), StoreError> {
        let outcome: AppendOutcome = serde_json::from_str(&self.outcome)
            .map_err(|e| StoreError::Database(sqlx::Error::Decode(Box::new(e))))?;
        let fingerprint = hash32(&self.fingerprint).ok_or_else(|| {
            StoreError::Database(sqlx::Error::Decode("fingerprint is not 32 bytes".into()))
        })?;
        Ok((
            (SiteId::from_uuid(self.site_id), self.key),
            super::plan::IdempotencyRecord {
                fingerprint,
                outcome,
            },
        ))
    }
}

fn hash32(bytes: &[u8]) -> Option<[u8; 32]> {
    bytes.try_into().ok()
}

/// Versions and counts are far below `i64::MAX`; saturate rather than wrap.
pub(crate) fn version_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The stored form of an append's first result.
pub(crate) fn outcome_json(outcome: &AppendOutcome) -> String {
    serde_json::to_string(outcome).unwrap_or_else(|_| "{}".to_owned())
}

/// Loads, inside the writer's transaction (the log head locked at `head`), what the
/// batch needs to know that the writer does not know already: stream versions,
/// idempotency records, chain heads. The same statements on both backends.
pub(crate) async fn load(
    tx: &mut Tx<'_>,
    head: Position,
    needs: &Needs,
    known: &mut Known,
) -> Result<LogState, StoreError> {
    let mut loaded = LogState {
        head,
        ..LogState::default()
    };
    let needs = known.fill(head, needs, &mut loaded);

    let keys: Vec<Bind> = needs
        .streams
        .iter()
        .flat_map(|k| [k.stream_type.as_str().into(), k.id.into()])
        .collect();
    let rows: Vec<(String, Uuid, Uuid, i64)> = fetch_in(
        tx,
        "SELECT stream_type, stream_id, site_id, version FROM streams \
         WHERE (stream_type, stream_id) IN",
        2,
        &keys,
    )
    .await?;
    for (stream_type, id, site, version) in rows {
        if let Some(key) = needs
            .streams
            .iter()
            .find(|k| k.id == id && k.stream_type.as_str() == stream_type)
        {
            loaded.streams.insert(
                *key,
                StreamState {
                    site_id: SiteId::from_uuid(site),
                    version: u64::try_from(version).unwrap_or(0),
                },
            );
        }
    }

    let keys: Vec<Bind> = needs
        .idempotency
        .iter()
        .flat_map(|(site, key)| [site.as_uuid().into(), key.as_str().into()])
        .collect();
    let rows: Vec<IdempotencyRow> = fetch_in(
        tx,
        "SELECT site_id, key, fingerprint, outcome FROM idempotency_keys \
         WHERE (site_id, key) IN",
        2,
        &keys,
    )
    .await?;
    for row in rows {
        let (id, record) = row.into_record()?;
        loaded.idempotency.insert(id, record);
    }

    let keys: Vec<Bind> = needs.sites.iter().map(|s| s.as_uuid().into()).collect();
    let rows: Vec<ChainRow> = fetch_in(
        tx,
        "SELECT site_id, last_position, last_hash, event_count FROM site_chains WHERE site_id IN",
        1,
        &keys,
    )
    .await?;
    for row in rows {
        let head = row.into_head()?;
        loaded.chains.insert(head.site_id, head);
    }
    Ok(loaded)
}
