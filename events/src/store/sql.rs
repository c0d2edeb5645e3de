//! SQL text that both dialects accept (both take `$1`-style parameters here, and each
//! number first appears in ascending order, which is what SQLite needs).

/// `SELECT <every events column> FROM events <rest>`.
macro_rules! select_events {
    ($rest:literal) => {
        concat!(
            "SELECT position, event_id, site_id, stream_type, stream_id, stream_version, \
             event_type, schema_version, payload, actor_id, subject_id, impersonation_id, \
             correlation_id, causation_id, idempotency_key, recorded_at, prev_hash, hash \
             FROM events ",
            $rest
        )
    };
}

pub(crate) const READ_ALL: &str = select_events!("WHERE position > $1 ORDER BY position LIMIT $2");
pub(crate) const READ_SITE: &str =
    select_events!("WHERE site_id = $1 AND position > $2 ORDER BY position LIMIT $3");
pub(crate) const READ_STREAM: &str = select_events!(
    "WHERE stream_type = $1 AND stream_id = $2 AND stream_version > $3 ORDER BY stream_version"
);
/// Followed by the list of stream ids, from `$3`.
pub(crate) const READ_STREAMS_UP_TO: &str =
    select_events!("WHERE stream_type = $1 AND position <= $2 AND stream_id IN");
pub(crate) const RECORDED_AT_OR_AFTER: &str =
    "SELECT recorded_at FROM events WHERE position >= $1 ORDER BY position LIMIT 1";
pub(crate) const STREAM_VERSION: &str =
    "SELECT site_id, version FROM streams WHERE stream_type = $1 AND stream_id = $2";
pub(crate) const HEAD: &str = "SELECT last_position FROM event_log_head WHERE id = 1";
pub(crate) const CHAIN_HEADS: &str =
    "SELECT site_id, last_position, last_hash, event_count FROM site_chains";
pub(crate) const CHAIN_HEAD_OF_SITE: &str =
    "SELECT site_id, last_position, last_hash, event_count FROM site_chains WHERE site_id = $1";
