//! Proof for outsiders: signed, chained digests of each site's log.
//!
//! The hash chain shows that the log matches its recorded head; whoever controls
//! the database can cut the tail and rewrite the head, or recompute the whole chain.
//! A digest is a statement signed with an Ed25519 key the database never holds:
//! "site S had `event_count` events up to position `to_position`, ending on
//! `head_hash`", naming the hash of the site's previous digest. Digests are kept
//! in the database and, one file each, outside it; with the public key an auditor
//! checks offline that the digests form an unbroken signed chain and that the log
//! still holds what each one states (see [`DigestCheck`]).
//!
//! Keys are PKCS#8 / SPKI PEM files, so other tools (OpenSSL) read them too; a key's
//! id is the first 16 hex digits of the SHA-256 of its 32 public key bytes.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use chrono::{DateTime, Utc};
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer, Verifier};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::envelope::{Position, RecordedEvent};
use crate::ids::SiteId;

/// What can go wrong with keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {why}")]
    File { path: PathBuf, why: String },
    #[error("no randomness available: {0}")]
    Randomness(String),
}

pub(crate) fn file_error(path: &Path, why: impl fmt::Display) -> KeyError {
    KeyError::File {
        path: path.to_owned(),
        why: why.to_string(),
    }
}

/// The id of a public key: 16 hex digits of the SHA-256 of its bytes.
fn key_id_of(public: &ed25519_dalek::VerifyingKey) -> String {
    hex::encode(&Sha256::digest(public.as_bytes())[..8])
}

/// The key that signs digests and export manifests. Its secret never leaves this
/// value: it is not printed (`Debug` shows the id only) nor stored anywhere else.
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
    id: String,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("id", &self.id).finish()
    }
}

impl SigningKey {
    /// A new key from the operating system's randomness.
    ///
    /// # Errors
    /// [`KeyError::Randomness`].
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| KeyError::Randomness(e.to_string()))?;
        Ok(Self::from_key(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    fn from_key(key: ed25519_dalek::SigningKey) -> Self {
        let id = key_id_of(&key.verifying_key());
        Self { key, id }
    }

    /// Reads a PKCS#8 PEM private key.
    ///
    /// # Errors
    /// [`KeyError::File`] when it cannot be read or is not an Ed25519 private key.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let pem = std::fs::read_to_string(path).map_err(|e| file_error(path, e))?;
        ed25519_dalek::SigningKey::from_pkcs8_pem(&pem)
            .map(Self::from_key)
            .map_err(|_| file_error(path, "not an Ed25519 private key (PKCS#8 PEM)"))
    }

    /// Writes the key pair as `signing-key.pem` (owner-only) and `public-key.pem`
    /// in `dir`, never over existing files; answers both paths.
    ///
    /// # Errors
    /// [`KeyError::File`].
    pub fn write_pair(&self, dir: &Path) -> Result<(PathBuf, PathBuf), KeyError> {
        std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
        let private = dir.join("signing-key.pem");
        let public = dir.join("public-key.pem");
        let secret = self
            .key
            .to_pkcs8_pem(Default::default())
            .map_err(|e| file_error(&private, e))?;
        write_new(&private, secret.as_bytes(), true)?;
        write_new(&public, self.public().pem().as_bytes(), false)?;
        Ok((private, public))
    }

    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    #[must_use]
    pub fn public(&self) -> PublicKey {
        PublicKey::from_key(self.key.verifying_key())
    }

    /// The signature of `message`, base64.
    #[must_use]
    pub fn sign(&self, message: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.key.sign(message).to_bytes())
    }
}

/// Creates `path` with `bytes`, refusing to replace a file; `secret` files are
/// readable by their owner only.
pub(crate) fn write_new(path: &Path, bytes: &[u8], secret: bool) -> Result<(), KeyError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options.open(path).map_err(|e| file_error(path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| file_error(path, e))
}

/// A public key: what an auditor holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: ed25519_dalek::VerifyingKey,
    id: String,
}

impl PublicKey {
    fn from_key(key: ed25519_dalek::VerifyingKey) -> Self {
        let id = key_id_of(&key);
        Self { key, id }
    }

    /// Reads an SPKI PEM public key.
    ///
    /// # Errors
    /// [`KeyError::File`].
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let pem = std::fs::read_to_string(path).map_err(|e| file_error(path, e))?;
        ed25519_dalek::VerifyingKey::from_public_key_pem(&pem)
            .map(Self::from_key)
            .map_err(|_| file_error(path, "not an Ed25519 public key (SPKI PEM)"))
    }

    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The 32 key bytes, base64.
    #[must_use]
    pub fn base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.key.as_bytes())
    }

    /// The key as SPKI PEM.
    #[must_use]
    pub fn pem(&self) -> String {
        self.key
            .to_public_key_pem(Default::default())
            .unwrap_or_default()
    }

    /// Whether `signature` (base64) is this key's over `message`.
    #[must_use]
    pub fn verifies(&self, message: &[u8], signature: &str) -> bool {
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(signature) else {
            return false;
        };
        let Ok(signature) = ed25519_dalek::Signature::from_slice(&bytes) else {
            return false;
        };
        self.key.verify(message, &signature).is_ok()
    }
}

/// What a digest states, in the order it is signed.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestBody {
    /// The format of this statement.
    pub version: u32,
    #[cfg_attr(feature = "openapi", schema(value_type = uuid::Uuid))]
    pub site_id: SiteId,
    /// 1 for a site's first digest, then one more each time.
    pub seq: i64,
    /// The first position this digest covers (the one after the previous digest's
    /// last; 1 for the first).
    pub from_position: i64,
    /// The site's last event at the time: the head it attests.
    pub to_position: i64,
    /// How many events the site had in all, up to `to_position`.
    pub event_count: i64,
    /// The hash of the event at `to_position` (hex).
    pub head_hash: String,
    /// The hash of the previous digest's statement (hex); `None` for the first.
    pub prev_digest_hash: Option<String>,
    pub signed_at: DateTime<Utc>,
    pub key_id: String,
}

impl DigestBody {
    /// The exact bytes signed and hashed: this statement as compact JSON, its
    /// fields in the order above.
    #[must_use]
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// What the next digest names as `prev_digest_hash`.
    #[must_use]
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.canonical()))
    }
}

/// A digest with its signature: what is stored and written to its file.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedDigest {
    #[serde(flatten)]
    pub body: DigestBody,
    /// Ed25519 over [`DigestBody::canonical`], base64.
    pub signature: String,
}

impl SignedDigest {
    /// Signs `body` (whose `key_id` must be the key's).
    #[must_use]
    pub fn sign(body: DigestBody, key: &SigningKey) -> Self {
        let signature = key.sign(&body.canonical());
        Self { body, signature }
    }

    /// Its file's name in a site's folder: sortable by `seq`.
    #[must_use]
    pub fn file_name(&self) -> String {
        format!("{:010}-{}.json", self.body.seq, self.body.to_position)
    }

    /// Its file's path under the digest directory: one folder per site.
    #[must_use]
    pub fn path_in(&self, dir: &Path) -> PathBuf {
        dir.join(self.body.site_id.to_string())
            .join(self.file_name())
    }

    /// Writes its file unless it is there already (a digest is never rewritten).
    /// Answers whether it wrote it.
    ///
    /// # Errors
    /// [`KeyError::File`] when the file cannot be written.
    pub fn write_file(&self, dir: &Path) -> Result<bool, KeyError> {
        let path = self.path_in(dir);
        if path.exists() {
            return Ok(false);
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| file_error(parent, e))?;
        }
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        match write_new(&path, text.as_bytes(), false) {
            Ok(()) => Ok(true),
            // Another server wrote it meanwhile.
            Err(_) if path.exists() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Reads every digest file of `dir` (of one site, or all), each site's in `seq`
/// order. A file that does not parse is a problem named by its path.
///
/// # Errors
/// A description of the unreadable directory or file.
pub fn read_dir(dir: &Path, site: Option<SiteId>) -> Result<Vec<SignedDigest>, String> {
    let mut sites = Vec::new();
    match site {
        Some(site) => sites.push(dir.join(site.to_string())),
        None => {
            let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for entry in entries {
                let path = entry.map_err(|e| e.to_string())?.path();
                if path.is_dir() {
                    sites.push(path);
                }
            }
            sites.sort();
        }
    }
    let mut all = Vec::new();
    for folder in sites {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for path in files {
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let digest: SignedDigest = serde_json::from_str(&text)
                .map_err(|e| format!("{}: not a digest ({e})", path.display()))?;
            all.push(digest);
        }
    }
    Ok(all)
}

/// Checks one site's digests against the public key and against its log, fed the
/// site's events in position order:
///
/// - every digest is signed by the key, the `seq`s run 1, 2, 3, ... with no gap,
///   each names its predecessor's hash, and their positions move forward (a removed,
///   altered, reordered or foreign digest);
/// - at each digest's `to_position` the log holds the site's event with that hash
///   and that many events before it (a chain rewritten with recomputed hashes, an
///   event inserted, removed or moved);
/// - the log reaches the last digest's `to_position` (a truncated tail).
#[derive(Debug)]
pub struct DigestCheck {
    digests: Vec<SignedDigest>,
    next: usize,
    count: i64,
    last_seen: Option<Position>,
    problem: Option<String>,
}

/// The outcome of [`DigestCheck`].
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DigestReport {
    pub ok: bool,
    /// How many digests were checked.
    pub digests: usize,
    /// The last digest's statement, when there is one.
    pub latest_to_position: Option<i64>,
    pub latest_signed_at: Option<DateTime<Utc>>,
    /// What is wrong, in words, naming the digest or position.
    pub problem: Option<String>,
}

impl DigestReport {
    /// A report of `problem` found before the log was read.
    #[must_use]
    pub fn failed(digests: &[SignedDigest], problem: String) -> Self {
        let latest = digests.last().map(|d| &d.body);
        Self {
            ok: false,
            digests: digests.len(),
            latest_to_position: latest.map(|b| b.to_position),
            latest_signed_at: latest.map(|b| b.signed_at),
            problem: Some(problem),
        }
    }
}

/// What differs between a site's digest files (`files`, the copy kept outside)
/// and the digests its database holds (`stored`), if anything: a digest removed
/// from or altered in the database, or a file missing before the last one.
#[must_use]
pub fn compare(files: &[SignedDigest], stored: &[SignedDigest]) -> Option<String> {
    // A site gathers a digest a minute: look them up by seq, not one by one.
    let kept_by_seq: std::collections::HashMap<i64, &SignedDigest> =
        stored.iter().map(|s| (s.body.seq, s)).collect();
    let filed: std::collections::HashSet<i64> = files.iter().map(|f| f.body.seq).collect();
    for file in files {
        match kept_by_seq.get(&file.body.seq) {
            None => {
                return Some(format!(
                    "digest {} is in the digest directory but not in the database (removed)",
                    file.body.seq
                ))
            }
            Some(kept) if *kept != file => {
                return Some(format!(
                    "digest {} differs between the digest directory and the database (altered)",
                    file.body.seq
                ))
            }
            Some(_) => {}
        }
    }
    let last_file = files.last().map_or(0, |f| f.body.seq);
    stored
        .iter()
        .find(|s| s.body.seq < last_file && !filed.contains(&s.body.seq))
        .map(|s| {
            format!(
                "digest {}'s file is missing from the digest directory (removed)",
                s.body.seq
            )
        })
}

impl DigestCheck {
    /// Checks the digests themselves at once; the log is checked as it is fed.
    #[must_use]
    pub fn new(site: SiteId, digests: Vec<SignedDigest>, key: &PublicKey) -> Self {
        let problem = chain_problem(site, &digests, key);
        Self {
            digests,
            next: 0,
            count: 0,
            last_seen: None,
            problem,
        }
    }

    /// Whether a problem was found already (later events need not be read).
    #[must_use]
    pub fn failed(&self) -> bool {
        self.problem.is_some()
    }

    /// The site's next event in position order.
    pub fn check(&mut self, event: &RecordedEvent) {
        if self.problem.is_some() {
            return;
        }
        self.count += 1;
        self.last_seen = Some(event.position);
        while let Some(digest) = self.digests.get(self.next) {
            let body = &digest.body;
            if event.position.0 < body.to_position {
                return;
            }
            if event.position.0 > body.to_position {
                self.problem = Some(format!(
                    "the log no longer holds the event digest {} attests at position {}: \
                     an event was removed or moved",
                    body.seq, body.to_position
                ));
                return;
            }
            if self.count != body.event_count {
                self.problem = Some(format!(
                    "the log holds {} events of the site up to position {}, digest {} signed {}: \
                     an event was {} before it",
                    self.count,
                    body.to_position,
                    body.seq,
                    body.event_count,
                    if self.count > body.event_count {
                        "inserted"
                    } else {
                        "removed"
                    }
                ));
                return;
            }
            if hex::encode(event.hash) != body.head_hash {
                self.problem = Some(format!(
                    "the event at position {} does not have the hash digest {} signed: the log \
                     was rewritten (its hashes recomputed) at or before that position",
                    body.to_position, body.seq
                ));
                return;
            }
            self.next += 1;
        }
    }

    /// The report, once every event of the site was fed.
    #[must_use]
    pub fn finish(mut self) -> DigestReport {
        if self.problem.is_none() {
            if let Some(digest) = self.digests.get(self.next) {
                let last = self.last_seen.map_or(0, |p| p.0);
                self.problem = Some(format!(
                    "the log ends at position {last} but digest {} attests events up to position \
                     {}: its tail was cut off (truncated)",
                    digest.body.seq, digest.body.to_position
                ));
            }
        }
        let latest = self.digests.last().map(|d| &d.body);
        DigestReport {
            ok: self.problem.is_none(),
            digests: self.digests.len(),
            latest_to_position: latest.map(|b| b.to_position),
            latest_signed_at: latest.map(|b| b.signed_at),
            problem: self.problem,
        }
    }
}

/// What is wrong with a site's digests themselves, if anything.
fn chain_problem(site: SiteId, digests: &[SignedDigest], key: &PublicKey) -> Option<String> {
    let mut previous: Option<&DigestBody> = None;
    for (i, digest) in digests.iter().enumerate() {
        let body = &digest.body;
        let expected_seq = i64::try_from(i).unwrap_or(i64::MAX) + 1;
        if body.site_id != site {
            return Some(format!(
                "digest {} belongs to another site ({})",
                body.seq, body.site_id
            ));
        }
        if body.key_id != key.id() || !key.verifies(&body.canonical(), &digest.signature) {
            return Some(if body.key_id == key.id() {
                format!(
                    "digest {} is not signed by this key: it was altered",
                    body.seq
                )
            } else {
                format!(
                    "digest {} is signed by another key ({}, not {})",
                    body.seq,
                    body.key_id,
                    key.id()
                )
            });
        }
        if body.seq != expected_seq {
            let later = digests[i..].iter().any(|d| d.body.seq == expected_seq);
            return Some(if later {
                format!(
                    "the digests are out of order: digest {} comes before digest {expected_seq}",
                    body.seq
                )
            } else if body.seq > expected_seq {
                format!("digest {expected_seq} is missing (removed)")
            } else {
                format!("digest {} appears twice", body.seq)
            });
        }
        let expected_prev = previous.map(DigestBody::hash);
        if body.prev_digest_hash != expected_prev {
            return Some(format!(
                "digest {} does not name digest {} before it: digests were removed, altered or \
                 reordered",
                body.seq,
                body.seq - 1
            ));
        }
        if let Some(previous) = previous {
            if body.from_position != previous.to_position + 1
                || body.to_position < body.from_position
            {
                return Some(format!(
                    "digest {} covers positions {} to {}, not on from digest {} (to {})",
                    body.seq,
                    body.from_position,
                    body.to_position,
                    previous.seq,
                    previous.to_position
                ));
            }
        }
        previous = Some(body);
    }
    None
}
