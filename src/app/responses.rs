//! Answers kept for retries: a write sent with an `Idempotency-Key` reserves the
//! key for its session in the append's own transaction
//! (`app::sessions`), and its answer is kept once known, so that a retry
//! gets the first answer back instead of acting twice.

use chrono::Utc;
use crm_events::on_pool;

use super::{App, AppError};

/// An answer kept for a session's key, or the key reserved by an append whose
/// answer was not kept (yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptResponse {
    /// SHA-256 of the request (method, path and query, body): a retry must be
    /// the same request.
    pub fingerprint: [u8; 32],
    /// The answer's status; [`KeptResponse::RESERVED`] while only reserved.
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

impl KeptResponse {
    /// The status of a key reserved by the append that committed its request,
    /// whose answer is not kept (yet).
    pub const RESERVED: u16 = 0;

    #[must_use]
    pub fn is_reserved(&self) -> bool {
        self.status == Self::RESERVED
    }
}

/// A stored answer: fingerprint, status, content type, body.
type KeptRow = (Vec<u8>, i64, Option<String>, Vec<u8>);

impl App {
    /// What the session (by its token's hash) kept under `key`, if anything.
    ///
    /// # Errors
    /// Store failures.
    pub async fn kept_response(
        &self,
        session: &[u8; 32],
        key: &str,
    ) -> Result<Option<KeptResponse>, AppError> {
        let row: Option<KeptRow> = on_pool!(self.store.database(), |pool| {
            sqlx::query_as(
                "SELECT fingerprint, status, content_type, body FROM http_idempotency \
                 WHERE token_hash = $1 AND key = $2",
            )
            .bind(session.as_slice())
            .bind(key)
            .fetch_optional(pool)
            .await
            .map_err(crm_events::StoreError::from)?
        });
        Ok(
            row.map(|(fingerprint, status, content_type, body)| KeptResponse {
                fingerprint: fingerprint.as_slice().try_into().unwrap_or([0; 32]),
                status: u16::try_from(status).unwrap_or(200),
                content_type,
                body,
            }),
        )
    }

    /// Keeps the answer to the session's request under `key`, unless an answer
    /// is kept there already (only a reservation is filled in).
    ///
    /// # Errors
    /// Store failures.
    pub async fn keep_response(
        &self,
        session: &[u8; 32],
        key: &str,
        kept: &KeptResponse,
        lead: Option<uuid::Uuid>,
    ) -> Result<(), AppError> {
        // An answer about a lead is kept only while the lead is not erased, in one
        // statement (a request cancelled meanwhile leaves no transaction open). On
        // PostgreSQL it takes the lead key's row lock: an erasure either waits
        // for it, and then removes the answer with the others, or went first, and
        // then it finds the key destroyed and keeps nothing. SQLite's statements
        // write one at a time. (A retry then runs again, and is refused as the
        // lead is gone.)
        let keep = if self.store.database().backend_name() == "sqlite" {
            KEEP_SQLITE
        } else {
            KEEP_POSTGRES
        };
        on_pool!(self.store.database(), |pool| {
            sqlx::query(keep)
                .bind(session.as_slice())
                .bind(key)
                .bind(kept.fingerprint.as_slice())
                .bind(i64::from(kept.status))
                .bind(kept.content_type.as_deref())
                .bind(kept.body.as_slice())
                .bind(Utc::now())
                .bind(lead)
                .execute(pool)
                .await
                .map(drop)
                .map_err(crm_events::StoreError::from)?
        });
        Ok(())
    }
}

/// Keeps an answer unless its lead is erased (see [`App::keep_response`]); the
/// PostgreSQL form takes the lead key's row lock.
macro_rules! keep_unless_erased {
    ($lock:literal) => {
        concat!(
            "INSERT INTO http_idempotency \
             (token_hash, key, fingerprint, status, content_type, body, created_at, lead_id) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE NOT EXISTS \
             (SELECT 1 FROM (SELECT sealed_key FROM lead_keys WHERE lead_id = $8",
            $lock,
            ") AS k WHERE k.sealed_key IS NULL) \
             ON CONFLICT (token_hash, key) DO UPDATE \
             SET status = excluded.status, content_type = excluded.content_type, \
             body = excluded.body, lead_id = excluded.lead_id \
             WHERE http_idempotency.status = 0"
        )
    };
}
const KEEP_SQLITE: &str = keep_unless_erased!("");
const KEEP_POSTGRES: &str = keep_unless_erased!(" FOR SHARE");
