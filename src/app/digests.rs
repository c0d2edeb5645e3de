//! Signed digests of each site's log, made by the server that holds the signing
//! key (see [`crm_events::digest`]): every interval, and at a clean shutdown, each
//! site whose log moved gets one, kept in the database and written as a file to the
//! digest directory. With several servers the database keeps exactly one digest
//! per site and `seq`; only the server whose digest was kept writes its file (any
//! server writes a missing file of the last few later).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crm_events::digest::{self, DigestBody, DigestReport, PublicKey, SignedDigest, SigningKey};
use crm_events::ids::SiteId;

use super::{App, AppError};

/// The key and where the digests' files go.
#[derive(Debug)]
pub struct Signer {
    key: SigningKey,
    dir: Option<PathBuf>,
}

/// How many of a site's latest digests each round makes sure have their file.
const FILES_CHECKED: u32 = 10;

impl App {
    /// This server signs digests with `key` and writes them under `dir` too.
    #[must_use]
    pub fn with_signer(mut self, key: SigningKey, dir: Option<PathBuf>) -> Self {
        self.signer = Some(Arc::new(Signer { key, dir }));
        self
    }

    /// The public half of the signing key, when this server has one.
    #[must_use]
    pub fn public_key(&self) -> Option<PublicKey> {
        self.signer.as_ref().map(|s| s.key.public())
    }

    /// The digest directory, when this server writes one.
    #[must_use]
    pub fn digest_dir(&self) -> Option<&Path> {
        self.signer.as_ref().and_then(|s| s.dir.as_deref())
    }

    /// `message` signed with this server's key: (key id, signature), when it has one.
    #[must_use]
    pub fn sign(&self, message: &[u8]) -> Option<(String, String)> {
        self.signer
            .as_ref()
            .map(|s| (s.key.id().to_owned(), s.key.sign(message)))
    }

    /// One round: a digest for every site whose log moved since its last one.
    /// Answers the digests this server made (and kept).
    ///
    /// # Errors
    /// Store failures.
    pub async fn write_digests(&self) -> Result<Vec<SignedDigest>, AppError> {
        let Some(signer) = self.signer.clone() else {
            return Ok(Vec::new());
        };
        let mut made = Vec::new();
        for head in self.store.chain_heads(None).await? {
            let latest = self.store.latest_digest(head.site_id).await?;
            if latest
                .as_ref()
                .is_none_or(|l| l.body.to_position < head.last_position.0)
            {
                // The head must be what the log holds: a head rewritten apart from
                // the log is never signed (the chain watch reports it).
                let event = self.store.event_at(head.last_position).await?;
                if !event.is_some_and(|e| e.hash == head.last_hash && e.site_id == head.site_id) {
                    tracing::error!(
                        site = %head.site_id,
                        position = head.last_position.0,
                        "no digest: the recorded head of the site's chain is not in the log"
                    );
                    continue;
                }
                let latest = latest.as_ref().map(|l| &l.body);
                let body = DigestBody {
                    version: 1,
                    site_id: head.site_id,
                    seq: latest.map_or(1, |l| l.seq + 1),
                    from_position: latest.map_or(1, |l| l.to_position + 1),
                    to_position: head.last_position.0,
                    event_count: i64::try_from(head.event_count).unwrap_or(i64::MAX),
                    head_hash: hex::encode(head.last_hash),
                    prev_digest_hash: latest.map(DigestBody::hash),
                    signed_at: self.clock.now(),
                    key_id: signer.key.id().to_owned(),
                };
                let signed = SignedDigest::sign(body, &signer.key);
                if self.store.record_digest(&signed).await? {
                    tracing::info!(
                        site = %head.site_id,
                        seq = signed.body.seq,
                        to_position = signed.body.to_position,
                        "digest signed"
                    );
                    made.push(signed);
                }
            }
            if let Some(dir) = &signer.dir {
                self.write_files(head.site_id, dir).await?;
            }
        }
        Ok(made)
    }

    /// Writes the files of the site's latest digests that have none yet (a failure
    /// is logged, and tried again next round).
    async fn write_files(&self, site: SiteId, dir: &Path) -> Result<(), AppError> {
        let latest = self
            .store
            .digests_listed(site, 0, true, None, FILES_CHECKED)
            .await?;
        for digest in latest {
            // Kept in the database all the same; the next round tries again.
            if let Err(error) = digest.write_file(dir) {
                tracing::error!(%error, seq = digest.body.seq, "a digest's file could not be written");
            }
        }
        Ok(())
    }

    /// Runs [`App::write_digests`] now and then every `interval`, until the
    /// returned task is aborted or the store closes.
    #[must_use]
    pub fn watch_digests(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        super::every(
            self,
            interval,
            "could not sign the sites' digests",
            |app| async move { app.write_digests().await.map(drop) },
        )
    }

    /// The site's log checked against its digests, signed by this server's key:
    /// the files of the digest directory when there is one (and the database's
    /// digests compared with them), the database's otherwise. `None` without a key.
    ///
    /// # Errors
    /// Store failures.
    pub async fn check_digests(&self, site: SiteId) -> Result<Option<DigestReport>, AppError> {
        let Some(key) = self.public_key() else {
            return Ok(None);
        };
        let stored = self.store.all_digests(site).await?;
        let digests = match self.digest_dir() {
            Some(dir) => match digest::read_dir(dir, Some(site)) {
                Ok(files) => {
                    if let Some(problem) = digest::compare(&files, &stored) {
                        return Ok(Some(DigestReport::failed(&files, problem)));
                    }
                    files
                }
                Err(problem) => return Ok(Some(DigestReport::failed(&stored, problem))),
            },
            None => stored,
        };
        Ok(Some(self.store.verify_digests(site, digests, &key).await?))
    }
}
