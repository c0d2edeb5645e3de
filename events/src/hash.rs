//! The tamper-evident hash chain.
//!
//! Each site's events form a chain: an event's hash is SHA-256 over a canonical,
//! length-prefixed encoding of its whole envelope (position included) followed by the
//! hash of the site's previous event. Altering, deleting, inserting or reordering an
//! event therefore breaks the chain at that event or the one after it, and
//! [`ChainVerifier`] names the first position where it breaks.
//!
//! The chain is not keyed: someone able to rewrite the whole table could recompute it.
//! What it proves is that the log matches its recorded head (`crm verify` prints each
//! site's head hash so it can be kept elsewhere).

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use crate::envelope::{Position, RecordedEvent};
use crate::ids::SiteId;

/// The `prev_hash` of a site's first event.
pub const GENESIS: [u8; 32] = [0; 32];

/// Versions the canonical encoding, so it can evolve without ambiguity.
const DOMAIN_TAG: &[u8] = b"crm-event-chain/1";

/// The hash of `event` chained to `prev_hash`. Only the envelope's content counts:
/// the stored `hash` and `prev_hash` fields of `event` are ignored.
#[must_use]
pub fn event_hash(event: &RecordedEvent, prev_hash: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    field(&mut h, DOMAIN_TAG);
    field(&mut h, &event.position.0.to_be_bytes());
    field(&mut h, event.event_id.as_uuid().as_bytes());
    field(&mut h, event.site_id.as_uuid().as_bytes());
    field(&mut h, event.stream.stream_type.as_str().as_bytes());
    field(&mut h, event.stream.id.as_bytes());
    field(&mut h, &event.stream_version.to_be_bytes());
    field(&mut h, event.event_type.as_bytes());
    field(&mut h, &event.schema_version.to_be_bytes());
    field(&mut h, event.payload.as_bytes());
    field(&mut h, event.actor_id.as_uuid().as_bytes());
    field(&mut h, event.subject_id.as_uuid().as_bytes());
    optional(
        &mut h,
        event
            .impersonation_id
            .map(|id| id.as_uuid())
            .as_ref()
            .map(|u| u.as_bytes().as_slice()),
    );
    field(&mut h, event.correlation_id.as_uuid().as_bytes());
    optional(
        &mut h,
        event.causation_id.as_ref().map(|u| u.as_bytes().as_slice()),
    );
    optional(&mut h, event.idempotency_key.as_deref().map(str::as_bytes));
    field(&mut h, &event.recorded_at.timestamp_micros().to_be_bytes());
    field(&mut h, prev_hash);
    h.finalize().into()
}

fn field(h: &mut Sha256, bytes: &[u8]) {
    // Lengths are bounded by the payload limit, far below u32::MAX.
    h.update(u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
    h.update(bytes);
}

fn optional(h: &mut Sha256, bytes: Option<&[u8]>) {
    match bytes {
        None => h.update([0]),
        Some(bytes) => {
            h.update([1]);
            field(h, bytes);
        }
    }
}

/// The outcome of verifying the log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub events_checked: u64,
    /// The first position at which the log departs from its chain.
    pub first_bad_position: Option<Position>,
    /// What is wrong there.
    pub problem: Option<String>,
}

/// The recorded head of one site's chain (kept apart from the events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    pub site_id: SiteId,
    pub last_position: Position,
    pub last_hash: [u8; 32],
    pub event_count: u64,
}

/// Walks the log in position order and finds the first place the chain breaks.
/// Feed it every event (all sites, or one site's) in order, then the recorded heads.
#[derive(Debug, Default)]
pub struct ChainVerifier {
    tips: HashMap<SiteId, Tip>,
    last_position: Option<Position>,
    checked: u64,
    failure: Option<(Position, String)>,
    /// Whether positions must be dense (true when verifying all sites at once).
    dense: bool,
}

#[derive(Debug, Clone, Copy)]
struct Tip {
    hash: [u8; 32],
    position: Position,
    count: u64,
}

impl ChainVerifier {
    /// A verifier for the whole log (all sites), which also checks that positions
    /// have no holes.
    #[must_use]
    pub fn for_whole_log() -> Self {
        Self {
            dense: true,
            ..Self::default()
        }
    }

    /// A verifier for one site's events.
    #[must_use]
    pub fn for_one_site() -> Self {
        Self::default()
    }

    /// Whether a break was already found (later events need not be read).
    #[must_use]
    pub fn failed(&self) -> bool {
        self.failure.is_some()
    }

    /// Checks the next event in position order.
    pub fn check(&mut self, event: &RecordedEvent) {
        if self.failure.is_some() {
            return;
        }
        self.checked += 1;
        if let Some(last) = self.last_position {
            if event.position <= last {
                return self.fail(event.position, "position out of order");
            }
            if self.dense && event.position != last.next() {
                return self.fail(last.next(), "event missing from the log");
            }
        } else if self.dense && event.position != Position(1) {
            return self.fail(Position(1), "event missing from the log");
        }
        self.last_position = Some(event.position);
        let tip = self.tips.get(&event.site_id).copied();
        let expected_prev = tip.map_or(GENESIS, |t| t.hash);
        if event.prev_hash != expected_prev {
            return self.fail(
                event.position,
                "previous-hash link broken (an event before it was removed, inserted or moved)",
            );
        }
        if event_hash(event, &event.prev_hash) != event.hash {
            return self.fail(event.position, "content does not match its hash (altered)");
        }
        self.tips.insert(
            event.site_id,
            Tip {
                hash: event.hash,
                position: event.position,
                count: tip.map_or(0, |t| t.count) + 1,
            },
        );
    }

    /// Compares the chain's end with the recorded head of each site, which catches a
    /// removal of a site's last events, and returns the report.
    #[must_use]
    pub fn finish(mut self, heads: &[ChainHead]) -> VerifyReport {
        if self.failure.is_none() {
            self.failure = self.departures(heads, None);
        }
        self.report()
    }

    /// Where the chain read so far departs from the recorded heads, judging only
    /// the heads at or before `up_to` (all when `None`): a head past it may belong
    /// to events appended after the reading stopped.
    fn departures(
        &self,
        heads: &[ChainHead],
        up_to: Option<Position>,
    ) -> Option<(Position, String)> {
        let mut missing: Option<(Position, String)> = None;
        let mut note = |at: Position, why: String| {
            if missing.as_ref().is_none_or(|(p, _)| at < *p) {
                missing = Some((at, why));
            }
        };
        for head in heads {
            if up_to.is_some_and(|up_to| head.last_position > up_to) {
                continue;
            }
            let tip = self.tips.get(&head.site_id);
            let intact = tip.is_some_and(|t| {
                t.hash == head.last_hash
                    && t.position == head.last_position
                    && t.count == head.event_count
            });
            if !intact {
                // The site's events stop short of its head: the first missing one
                // comes after the last event read (of the whole log when it is
                // dense, else of this site).
                let last_read = if self.dense {
                    self.last_position
                } else {
                    tip.map(|t| t.position)
                };
                let at = last_read
                    .unwrap_or(Position::START)
                    .next()
                    .min(head.last_position);
                note(
                    at,
                    format!("site {} ends before its recorded head", head.site_id),
                );
            }
        }
        for (site, tip) in &self.tips {
            if !heads.iter().any(|h| h.site_id == *site) {
                note(tip.position, format!("site {site} has no recorded head"));
            }
        }
        missing
    }

    /// The report so far, without consuming the verifier: for a verification that
    /// goes on as the log grows ([`ChainVerifier::check_heads`] first).
    #[must_use]
    pub fn report(&self) -> VerifyReport {
        VerifyReport {
            ok: self.failure.is_none(),
            events_checked: self.checked,
            first_bad_position: self.failure.as_ref().map(|(p, _)| *p),
            problem: self.failure.as_ref().map(|(_, why)| why.clone()),
        }
    }

    /// Compares the recorded heads at or before `up_to` with the chain read so far
    /// (see [`ChainVerifier::finish`]); the verifier can go on reading after it.
    pub fn check_heads(&mut self, heads: &[ChainHead], up_to: Position) {
        if self.failure.is_none() {
            self.failure = self.departures(heads, Some(up_to));
        }
    }

    /// The last position read so far.
    #[must_use]
    pub fn checked_to(&self) -> Position {
        self.last_position.unwrap_or(Position::START)
    }

    /// Records a break when the events read stop short of `head`, the log's last
    /// position read before them: the ones after are missing.
    pub fn expect_up_to(&mut self, head: Position) {
        if self.failure.is_none() && self.checked_to() < head {
            let at = self.checked_to().next();
            self.failure = Some((
                at,
                format!("event missing from the log (its head is at {})", head.0),
            ));
        }
    }

    /// Records that the row at `position` could not be read at all.
    pub fn unreadable(&mut self, position: Position, reason: String) {
        if self.failure.is_none() {
            self.failure = Some((position, format!("unreadable: {reason}")));
        }
    }

    /// The report when the row at `position` could not be read at all.
    #[must_use]
    pub fn finish_unreadable(self, position: Position, reason: String) -> VerifyReport {
        VerifyReport {
            ok: false,
            events_checked: self.checked,
            first_bad_position: Some(position),
            problem: Some(format!("unreadable: {reason}")),
        }
    }

    fn fail(&mut self, position: Position, why: &str) {
        self.failure = Some((position, why.to_owned()));
    }
}
