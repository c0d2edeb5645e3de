//! Planning one group-commit batch, without I/O.
//!
//! The writer loads, inside its transaction, the current state of everything the
//! batch touches (stream versions, idempotency records, each site's chain head, the
//! log head). [`plan`] then decides each request in arrival order against that state
//! as the earlier requests of the batch leave it: a request that conflicts is refused
//! on its own and changes nothing, the others get their positions, versions and
//! hashes. The writer then writes [`Writes`] in bulk and commits once.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::side::SideWrite;
use crate::envelope::{
    AppendOutcome, Metadata, Position, RecordedEvent, StreamAppend, StreamAppended, StreamKey,
};
use crate::error::StoreError;
use crate::hash::{event_hash, ChainHead, GENESIS};
use crate::ids::{EventId, SiteId};

/// One caller's append, validated and waiting for the writer.
#[derive(Debug, Clone)]
pub(crate) struct AppendRequest {
    pub site_id: SiteId,
    pub appends: Vec<StreamAppend>,
    pub meta: Metadata,
    /// Identifies the request's content, to tell a retry from a reuse of its key.
    pub fingerprint: [u8; 32],
    /// Rows beside the log, written with the request's events.
    pub side: Vec<SideWrite>,
    /// Each event's payload with its personal values open (in order across the
    /// appends), where sealing changed it: what the commit is announced with,
    /// so that the projections need not open what this process just sealed.
    pub opened: Vec<Option<String>>,
}

/// A stream's owner and version as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StreamState {
    pub site_id: SiteId,
    pub version: u64,
}

/// The first result of an append made with an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdempotencyRecord {
    pub fingerprint: [u8; 32],
    pub outcome: AppendOutcome,
}

/// What the batch needs to know, loaded inside the writer's transaction.
#[derive(Debug, Default)]
pub(crate) struct LogState {
    pub head: Position,
    pub streams: HashMap<StreamKey, StreamState>,
    pub idempotency: HashMap<(SiteId, String), IdempotencyRecord>,
    pub chains: HashMap<SiteId, ChainHead>,
}

/// The keys a batch touches, so the writer can load them in one go.
#[derive(Debug, Default)]
pub(crate) struct Needs {
    pub streams: Vec<StreamKey>,
    pub idempotency: Vec<(SiteId, String)>,
    pub sites: Vec<SiteId>,
}

impl Needs {
    pub fn of(batch: &[AppendRequest]) -> Self {
        let mut streams = HashSet::new();
        let mut keys = HashSet::new();
        let mut sites = HashSet::new();
        for request in batch {
            sites.insert(request.site_id);
            if let Some(key) = &request.meta.idempotency_key {
                keys.insert((request.site_id, key.clone()));
            }
            streams.extend(request.appends.iter().map(|a| a.stream));
        }
        Self {
            streams: streams.into_iter().collect(),
            idempotency: keys.into_iter().collect(),
            sites: sites.into_iter().collect(),
        }
    }
}

/// What the writer knows from its own last commit: the stream versions and chain
/// heads it wrote. It holds exactly while the log head is where that commit left it,
/// since every append of every process moves the head; a batch that finds the head
/// elsewhere forgets it all and reads everything.
#[derive(Debug, Default)]
pub(crate) struct Known {
    head: Option<Position>,
    streams: HashMap<StreamKey, StreamState>,
    chains: HashMap<SiteId, ChainHead>,
}

/// How many stream versions the writer remembers at most.
const KNOWN_STREAMS: usize = 50_000;

impl Known {
    /// Puts into `loaded` what is known at `head`, and returns what must still be
    /// read.
    pub fn fill(&mut self, head: Position, needs: &Needs, loaded: &mut LogState) -> Needs {
        if self.head != Some(head) {
            *self = Self::default();
        }
        let mut missing = Needs {
            idempotency: needs.idempotency.clone(),
            ..Needs::default()
        };
        for key in &needs.streams {
            match self.streams.get(key) {
                Some(state) => {
                    loaded.streams.insert(*key, *state);
                }
                None => missing.streams.push(*key),
            }
        }
        for site in &needs.sites {
            match self.chains.get(site) {
                Some(chain) => {
                    loaded.chains.insert(*site, *chain);
                }
                None => missing.sites.push(*site),
            }
        }
        missing
    }

    /// Everything `needs` asks for, when the writer knows it all from its last
    /// commit: the batch can be planned before the log is locked, on the
    /// assumption that the head is still where that commit left it. (Writing at
    /// the next position then proves it: any other append took that position.)
    pub fn loaded(&self, needs: &Needs) -> Option<LogState> {
        let head = self.head?;
        if !needs.idempotency.is_empty() {
            return None;
        }
        let mut loaded = LogState {
            head,
            ..LogState::default()
        };
        for key in &needs.streams {
            loaded.streams.insert(*key, *self.streams.get(key)?);
        }
        for site in &needs.sites {
            loaded.chains.insert(*site, *self.chains.get(site)?);
        }
        Some(loaded)
    }

    /// Learns what a batch wrote, once it has committed.
    pub fn learn(&mut self, writes: &Writes) {
        if self.streams.len() + writes.streams.len() > KNOWN_STREAMS {
            self.streams.clear();
        }
        self.streams.extend(writes.streams.iter().copied());
        self.chains
            .extend(writes.chains.iter().map(|c| (c.site_id, *c)));
        self.head = Some(writes.head);
    }
}

/// Everything a batch writes, in bulk.
#[derive(Debug, Default)]
pub(crate) struct Writes {
    pub events: Vec<RecordedEvent>,
    /// Each event's payload open, where it differs from the stored one.
    pub opened: Vec<Option<String>>,
    pub streams: Vec<(StreamKey, StreamState)>,
    pub idempotency: Vec<((SiteId, String), IdempotencyRecord)>,
    pub chains: Vec<ChainHead>,
    pub head: Position,
    /// The rows beside the log of the requests appended (not of those refused or
    /// replayed), in order.
    pub side: Vec<SideWrite>,
}

/// Decides every request of the batch. Returns one result per request, in order, and
/// what to write for the accepted ones.
pub(crate) fn plan(
    batch: &[AppendRequest],
    mut state: LogState,
    now: DateTime<Utc>,
) -> (Vec<Result<AppendOutcome, StoreError>>, Writes) {
    // Microseconds: what both databases store, so the hash can be checked on read.
    let now = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
    let mut writes = Writes::default();
    let mut touched_streams = Vec::new();
    let mut touched_sites = Vec::new();
    let results = batch
        .iter()
        .map(|request| {
            plan_one(
                request,
                &mut state,
                &mut writes,
                now,
                &mut touched_streams,
                &mut touched_sites,
            )
        })
        .collect();
    touched_streams.sort_unstable();
    touched_streams.dedup();
    writes.streams = touched_streams
        .into_iter()
        .filter_map(|key| state.streams.get(&key).map(|s| (key, *s)))
        .collect();
    touched_sites.sort_unstable();
    touched_sites.dedup();
    writes.chains = touched_sites
        .into_iter()
        .filter_map(|site| state.chains.get(&site).copied())
        .collect();
    writes.head = state.head;
    (results, writes)
}

fn plan_one(
    request: &AppendRequest,
    state: &mut LogState,
    writes: &mut Writes,
    now: DateTime<Utc>,
    touched_streams: &mut Vec<StreamKey>,
    touched_sites: &mut Vec<SiteId>,
) -> Result<AppendOutcome, StoreError> {
    let idempotency = request
        .meta
        .idempotency_key
        .as_ref()
        .map(|key| (request.site_id, key.clone()));
    if let Some(id) = &idempotency {
        if let Some(first) = state.idempotency.get(id) {
            return if first.fingerprint == request.fingerprint {
                Ok(AppendOutcome {
                    replayed: true,
                    ..first.outcome.clone()
                })
            } else {
                Err(StoreError::IdempotencyKeyReused { key: id.1.clone() })
            };
        }
    }

    // Check every stream before changing anything, so a refused request leaves no trace.
    let mut after: HashMap<StreamKey, u64> = HashMap::new();
    for append in &request.appends {
        let stored = state.streams.get(&append.stream);
        if stored.is_some_and(|s| s.site_id != append.site_id) {
            return Err(StoreError::CrossSite(append.stream));
        }
        let actual = after
            .get(&append.stream)
            .copied()
            .or(stored.map(|s| s.version))
            .unwrap_or(0);
        if !append.expected.admits(actual) {
            return Err(StoreError::Conflict {
                stream: append.stream,
                expected: append.expected,
                actual,
            });
        }
        after.insert(append.stream, actual + append.events.len() as u64);
    }

    let site = request.site_id;
    let mut chain = state.chains.get(&site).copied().unwrap_or(ChainHead {
        site_id: site,
        last_position: Position::START,
        last_hash: GENESIS,
        event_count: 0,
    });
    let mut streams = Vec::with_capacity(request.appends.len());
    let mut opened = request.opened.iter().cloned();
    for append in &request.appends {
        let mut version = state.streams.get(&append.stream).map_or(0, |s| s.version);
        let first_position = state.head.next();
        for new in &append.events {
            state.head = state.head.next();
            version += 1;
            let mut event = RecordedEvent {
                position: state.head,
                event_id: EventId::generate(),
                site_id: site,
                stream: append.stream,
                stream_version: version,
                event_type: new.event_type.clone(),
                schema_version: new.schema_version,
                payload: new.payload.clone(),
                actor_id: request.meta.actor_id,
                subject_id: request.meta.subject_id,
                impersonation_id: request.meta.impersonation_id,
                correlation_id: request.meta.correlation_id,
                causation_id: request.meta.causation_id,
                idempotency_key: request.meta.idempotency_key.clone(),
                recorded_at: now,
                prev_hash: chain.last_hash,
                hash: GENESIS,
            };
            event.hash = event_hash(&event, &chain.last_hash);
            chain.last_hash = event.hash;
            chain.last_position = event.position;
            chain.event_count += 1;
            writes.events.push(event);
            writes.opened.push(opened.next().flatten());
        }
        state.streams.insert(
            append.stream,
            StreamState {
                site_id: site,
                version,
            },
        );
        touched_streams.push(append.stream);
        streams.push(StreamAppended {
            stream: append.stream,
            first_position,
            last_position: state.head,
            version,
        });
    }
    state.chains.insert(site, chain);
    touched_sites.push(site);

    let outcome = AppendOutcome {
        streams,
        last_position: state.head,
        replayed: false,
    };
    if let Some(id) = idempotency {
        let record = IdempotencyRecord {
            fingerprint: request.fingerprint,
            outcome: outcome.clone(),
        };
        state.idempotency.insert(id.clone(), record.clone());
        writes.idempotency.push((id, record));
    }
    writes.side.extend(request.side.iter().cloned());
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{ExpectedVersion, NewEvent, StreamType};
    use crate::ids::UserId;
    use uuid::Uuid;

    fn request(
        site: SiteId,
        stream: StreamKey,
        expected: ExpectedVersion,
        n: usize,
    ) -> AppendRequest {
        AppendRequest {
            site_id: site,
            appends: vec![StreamAppend {
                site_id: site,
                stream,
                expected,
                events: (0..n)
                    .map(|i| NewEvent {
                        event_type: "LeadTagAdded".into(),
                        schema_version: 1,
                        payload: format!(r#"{{"tag":"t{i}"}}"#),
                    })
                    .collect(),
            }],
            opened: Vec::new(),
            meta: Metadata::acting_as_self(UserId::generate()),
            fingerprint: [n as u8; 32],
            side: Vec::new(),
        }
    }

    #[test]
    fn only_the_requests_appended_write_their_rows_beside_the_log() {
        let site = SiteId::generate();
        let lead = StreamKey::new(StreamType::Lead, Uuid::now_v7());
        let row = |what| SideWrite::one(what, "UPDATE t SET x = 1", Vec::new());
        let mut first = request(site, lead, ExpectedVersion::NoStream, 1);
        first.side = vec![row("first")];
        // Expects a stream that does not exist yet when the batch is planned.
        let mut refused = request(site, lead, ExpectedVersion::NoStream, 1);
        refused.side = vec![row("refused")];
        let mut third = request(site, lead, ExpectedVersion::Exact(1), 1);
        third.side = vec![row("third")];
        let (results, writes) = plan(&[first, refused, third], LogState::default(), Utc::now());
        assert!(results[0].is_ok() && results[1].is_err() && results[2].is_ok());
        let written: Vec<_> = writes.side.iter().map(|w| w.what).collect();
        assert_eq!(written, ["first", "third"]);
    }

    #[test]
    fn a_conflicting_request_is_refused_alone_and_the_rest_of_the_batch_goes_through() {
        let site = SiteId::generate();
        let lead = StreamKey::new(StreamType::Lead, Uuid::now_v7());
        let batch = [
            request(site, lead, ExpectedVersion::NoStream, 2),
            request(site, lead, ExpectedVersion::NoStream, 1),
            request(site, lead, ExpectedVersion::Exact(2), 1),
        ];
        let (results, writes) = plan(&batch, LogState::default(), Utc::now());
        assert!(results[0].is_ok());
        assert!(matches!(
            results[1],
            Err(StoreError::Conflict { actual: 2, .. })
        ));
        assert_eq!(results[2].as_ref().unwrap().streams[0].version, 3);
        let positions: Vec<i64> = writes.events.iter().map(|e| e.position.0).collect();
        assert_eq!(positions, [1, 2, 3]);
        assert_eq!(writes.head, Position(3));
        assert_eq!(
            writes.streams,
            [(
                lead,
                StreamState {
                    site_id: site,
                    version: 3
                }
            )]
        );
        assert_eq!(writes.chains[0].last_hash, writes.events[2].hash);
        assert_eq!(writes.events[1].prev_hash, writes.events[0].hash);
    }

    #[test]
    fn a_retry_within_the_batch_replays_and_a_reused_key_is_refused() {
        let site = SiteId::generate();
        let lead = StreamKey::new(StreamType::Lead, Uuid::now_v7());
        let mut first = request(site, lead, ExpectedVersion::Any, 1);
        first.meta.idempotency_key = Some("k".into());
        let retry = first.clone();
        let mut reuse = request(site, lead, ExpectedVersion::Any, 2);
        reuse.meta.idempotency_key = Some("k".into());
        let (results, writes) = plan(&[first, retry, reuse], LogState::default(), Utc::now());
        let first = results[0].as_ref().unwrap();
        let retry = results[1].as_ref().unwrap();
        assert!(!first.replayed && retry.replayed);
        assert_eq!(first.streams, retry.streams);
        assert!(matches!(
            results[2],
            Err(StoreError::IdempotencyKeyReused { .. })
        ));
        assert_eq!(writes.events.len(), 1);
        assert_eq!(writes.idempotency.len(), 1);
    }

    #[test]
    fn the_writer_trusts_what_it_wrote_only_while_the_head_has_not_moved() {
        let site = SiteId::generate();
        let lead = StreamKey::new(StreamType::Lead, Uuid::now_v7());
        let other = StreamKey::new(StreamType::Lead, Uuid::now_v7());
        let (_, writes) = plan(
            &[request(site, lead, ExpectedVersion::NoStream, 1)],
            LogState::default(),
            Utc::now(),
        );
        let mut known = Known::default();
        known.learn(&writes);
        let needs = Needs {
            streams: vec![lead, other],
            idempotency: vec![(site, "k".into())],
            sites: vec![site],
        };

        let mut loaded = LogState::default();
        let missing = known.fill(writes.head, &needs, &mut loaded);
        assert_eq!(missing.streams, [other]);
        assert!(missing.sites.is_empty());
        assert_eq!(missing.idempotency, needs.idempotency, "never kept");
        assert_eq!(loaded.streams[&lead].version, 1);
        assert_eq!(loaded.chains[&site], writes.chains[0]);

        // Another process appended: nothing is trusted any more.
        let mut loaded = LogState::default();
        let missing = known.fill(Position(writes.head.0 + 1), &needs, &mut loaded);
        assert_eq!(missing.streams, [lead, other]);
        assert_eq!(missing.sites, [site]);
        assert!(loaded.streams.is_empty() && loaded.chains.is_empty());
        let missing = known.fill(writes.head, &needs, &mut LogState::default());
        assert_eq!(missing.streams.len(), 2, "forgotten for good");
    }
}
