//! The store's side of [`crate::digest`]: digests kept in `audit_digests`
//! (append-only, one per site and `seq`), and a site's log checked against them.

use super::EventStore;
use crate::digest::{DigestCheck, DigestReport, PublicKey, SignedDigest};
use crate::envelope::{Position, RecordedEvent};
use crate::error::StoreError;
use crate::ids::SiteId;
use crate::on_pool;

fn corrupt(why: String) -> StoreError {
    StoreError::Database(sqlx::Error::Protocol(why))
}

fn parse(rows: Vec<(String,)>) -> Result<Vec<SignedDigest>, StoreError> {
    rows.into_iter()
        .map(|(text,)| {
            serde_json::from_str(&text).map_err(|e| corrupt(format!("a stored digest: {e}")))
        })
        .collect()
}

impl EventStore {
    /// Keeps `digest` unless the site has a digest of that `seq` already (another
    /// server's, written at the same moment): answers whether this one was kept.
    ///
    /// # Errors
    /// Database errors.
    pub async fn record_digest(&self, digest: &SignedDigest) -> Result<bool, StoreError> {
        let text = serde_json::to_string(digest).unwrap_or_default();
        let body = &digest.body;
        let kept = on_pool!(self.database(), |pool| {
            sqlx::query(
            "INSERT INTO audit_digests (site_id, seq, to_position, digest) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (site_id, seq) DO NOTHING"
        )
        .bind(body.site_id.as_uuid())
        .bind(body.seq)
        .bind(body.to_position)
        .bind(&text)
        .execute(pool)
        .await?
        .rows_affected()
        });
        Ok(kept == 1)
    }

    /// A site's digests in `seq` order, from the one after `after_seq`.
    ///
    /// # Errors
    /// Database errors; a stored digest that does not parse.
    pub async fn digests(
        &self,
        site: SiteId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<SignedDigest>, StoreError> {
        let rows: Vec<(String,)> = on_pool!(self.database(), |pool| {
            sqlx::query_as(
            "SELECT digest FROM audit_digests WHERE site_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        )
        .bind(site.as_uuid())
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?
        });
        parse(rows)
    }

    /// A page of a site's digests that reach `from_position` or beyond, newest
    /// first (or oldest first), after the digest `after_seq` in that order.
    ///
    /// # Errors
    /// Database errors; a stored digest that does not parse.
    pub async fn digests_listed(
        &self,
        site: SiteId,
        from_position: i64,
        newest_first: bool,
        after_seq: Option<i64>,
        limit: u32,
    ) -> Result<Vec<SignedDigest>, StoreError> {
        let (past, direction) = if newest_first {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        let after = after_seq.unwrap_or(if newest_first { i64::MAX } else { 0 });
        let text = format!(
            "SELECT digest FROM audit_digests WHERE site_id = $1 AND to_position >= $2 \
             AND seq {past} $3 ORDER BY seq {direction} LIMIT $4"
        );
        let rows: Vec<(String,)> = on_pool!(self.database(), |pool| sqlx::query_as(&text)
            .bind(site.as_uuid())
            .bind(from_position)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?);
        parse(rows)
    }

    /// A site's latest digest.
    ///
    /// # Errors
    /// Database errors; a stored digest that does not parse.
    pub async fn latest_digest(&self, site: SiteId) -> Result<Option<SignedDigest>, StoreError> {
        let rows: Vec<(String,)> = on_pool!(self.database(), |pool| sqlx::query_as(
            "SELECT digest FROM audit_digests WHERE site_id = $1 ORDER BY seq DESC LIMIT 1"
        )
        .bind(site.as_uuid())
        .fetch_all(pool)
        .await?);
        Ok(parse(rows)?.pop())
    }

    /// Every digest of a site, in `seq` order.
    ///
    /// # Errors
    /// As [`EventStore::digests`].
    pub async fn all_digests(&self, site: SiteId) -> Result<Vec<SignedDigest>, StoreError> {
        let mut all = Vec::new();
        loop {
            let after = all.last().map_or(0, |d: &SignedDigest| d.body.seq);
            let page = self.digests(site, after, 1_000).await?;
            if page.is_empty() {
                return Ok(all);
            }
            all.extend(page);
        }
    }

    /// The event at `position`, if the log holds one there.
    ///
    /// # Errors
    /// Database errors; an unreadable row.
    pub async fn event_at(&self, position: Position) -> Result<Option<RecordedEvent>, StoreError> {
        let before = Position(position.0.saturating_sub(1));
        let found = self.read_all_stored(before, 1).await?;
        Ok(found.into_iter().find(|e| e.position == position))
    }

    /// Checks a site's log against `digests` (read from their files, or from the
    /// database) signed by `key`: see [`DigestCheck`].
    ///
    /// # Errors
    /// Database errors; an unreadable row.
    pub async fn verify_digests(
        &self,
        site: SiteId,
        digests: Vec<SignedDigest>,
        key: &PublicKey,
    ) -> Result<DigestReport, StoreError> {
        let mut check = DigestCheck::new(site, digests, key);
        let mut cursor = Position::START;
        while !check.failed() {
            let page = self.read_site_stored(site, cursor, 2_000).await?;
            let Some(last) = page.last() else { break };
            cursor = last.position;
            for event in &page {
                check.check(event);
            }
        }
        Ok(check.finish())
    }
}
