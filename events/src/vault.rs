//! Sealing a lead's personal data, so that destroying one key erases it.
//!
//! A lead's personal values in event payloads (its name, email and phone, their
//! befores and afters, note bodies, task titles, communication summaries) are
//! stored sealed: `{"sealed": "<base64>"}` in place of the value, encrypted with
//! XChaCha20-Poly1305 under a key of that lead's own. The lead's key is stored
//! beside the log, itself sealed with the master key, which lives in a file and
//! never in the database. The hash chain covers the sealed text, so destroying a
//! lead's key (its erasure) leaves the log append-only and verifiable while its
//! personal values can never be read again; they read as [`ERASED`].
//!
//! A value is sealed together with where it sits (the lead, the event type and
//! the field): moved elsewhere, it does not open. `null` is never sealed: that a
//! lead had no phone says nothing about anyone.
//!
//! Events written before sealing existed hold plain values; they read as they are
//! until the lead is erased, and as [`ERASED`] after.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::digest::{file_error, write_new, KeyError};

/// What an erased value reads as.
pub const ERASED: &str = "[erased]";

/// The lead fields that are personal: sealed in `LeadCreated`, and in the
/// befores and afters of `LeadFieldsUpdated`'s changes of these fields.
pub const PERSONAL_LEAD_FIELDS: [&str; 3] = ["name", "email", "phone"];

const NONCE: usize = 24;
const KEY: usize = 32;

/// The master key: it seals every lead's key. Read from a file of its own (base64
/// of 32 random bytes); `Debug` shows its id only.
#[derive(Clone)]
pub struct MasterKey {
    cipher: XChaCha20Poly1305,
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish()
    }
}

impl MasterKey {
    /// A new random master key.
    ///
    /// # Errors
    /// [`KeyError::Randomness`].
    pub fn generate() -> Result<Self, KeyError> {
        Ok(Self::from_bytes(&random::<KEY>()?))
    }

    fn from_bytes(bytes: &[u8; KEY]) -> Self {
        let mut id = Sha256::new();
        id.update(b"crm master key\0");
        id.update(bytes);
        Self {
            cipher: XChaCha20Poly1305::new(bytes.into()),
            id: hex::encode(&id.finalize()[..8]),
        }
    }

    /// Reads a master key file (`crm keys generate` writes one).
    ///
    /// # Errors
    /// [`KeyError::File`] when it cannot be read or holds no key.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok()
            .and_then(|bytes| <[u8; KEY]>::try_from(bytes).ok())
            .ok_or_else(|| file_error(path, "not a master key (base64 of 32 bytes)"))?;
        Ok(Self::from_bytes(&bytes))
    }

    /// Writes a new master key to `dir/master-key` (readable by its owner only),
    /// never over an existing file; answers the path.
    ///
    /// # Errors
    /// [`KeyError`].
    pub fn generate_file(dir: &Path) -> Result<PathBuf, KeyError> {
        std::fs::create_dir_all(dir).map_err(|e| file_error(dir, e))?;
        let path = dir.join("master-key");
        let bytes = random::<KEY>()?;
        let text = base64::engine::general_purpose::STANDARD.encode(bytes) + "\n";
        write_new(&path, text.as_bytes(), true)?;
        Ok(path)
    }

    /// 16 hex digits that name the key (not a secret).
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A new lead key, sealed with this master key for `lead`: the key and the
    /// bytes to store.
    ///
    /// # Errors
    /// [`KeyError::Randomness`].
    pub fn new_lead_key(&self, lead: Uuid) -> Result<(LeadKey, Vec<u8>), KeyError> {
        let bytes = random::<KEY>()?;
        let sealed = seal_bytes(&self.cipher, &bytes, &lead_key_context(lead))?;
        Ok((LeadKey::from_bytes(&bytes), sealed))
    }

    /// Opens a lead key stored for `lead`; `None` when it does not open (another
    /// master key, another lead's key, or altered bytes).
    #[must_use]
    pub fn open_lead_key(&self, lead: Uuid, sealed: &[u8]) -> Option<LeadKey> {
        let bytes = open_bytes(&self.cipher, sealed, &lead_key_context(lead))?;
        let bytes = <[u8; KEY]>::try_from(bytes).ok()?;
        Some(LeadKey::from_bytes(&bytes))
    }

    /// A value that proves, later, that a database's keys were sealed with this
    /// master key ([`MasterKey::proves`]).
    ///
    /// # Errors
    /// [`KeyError::Randomness`].
    pub fn proof(&self) -> Result<Vec<u8>, KeyError> {
        seal_bytes(&self.cipher, self.id.as_bytes(), b"crm master key proof")
    }

    /// Whether `proof` was made by this master key.
    #[must_use]
    pub fn proves(&self, proof: &[u8]) -> bool {
        open_bytes(&self.cipher, proof, b"crm master key proof").as_deref()
            == Some(self.id.as_bytes())
    }
}

/// One lead's key. `Debug` shows nothing of it.
#[derive(Clone)]
pub struct LeadKey {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for LeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeadKey")
    }
}

impl LeadKey {
    fn from_bytes(bytes: &[u8; KEY]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(bytes.into()),
        }
    }
}

fn lead_key_context(lead: Uuid) -> Vec<u8> {
    [b"crm lead key\0".as_slice(), lead.as_bytes()].concat()
}

fn random<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes).map_err(|e| KeyError::Randomness(e.to_string()))?;
    Ok(bytes)
}

/// A random nonce, then the ciphertext with its tag.
fn seal_bytes(cipher: &XChaCha20Poly1305, msg: &[u8], aad: &[u8]) -> Result<Vec<u8>, KeyError> {
    let nonce = random::<NONCE>()?;
    let sealed = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg, aad })
        .map_err(|_| KeyError::Randomness("encryption failed".to_owned()))?;
    Ok([nonce.as_slice(), &sealed].concat())
}

fn open_bytes(cipher: &XChaCha20Poly1305, sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE {
        return None;
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE);
    cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
}

/// Whether events of this type carry a lead's personal values.
#[must_use]
pub fn is_personal(event_type: &str) -> bool {
    matches!(
        event_type,
        "LeadCreated"
            | "LeadFieldsUpdated"
            | "LeadNoteAdded"
            | "LeadTaskCreated"
            | "LeadCommunicationLogged"
    )
}

/// Calls `each(place, value)` on every personal value of a payload of
/// `event_type` (at any schema version): `place` names where it sits, and is
/// sealed with it.
fn personal_values(event_type: &str, payload: &mut Value, each: &mut dyn FnMut(&str, &mut Value)) {
    let fields: &[&str] = match event_type {
        "LeadCreated" => &PERSONAL_LEAD_FIELDS,
        "LeadNoteAdded" => &["body"],
        "LeadTaskCreated" => &["title"],
        "LeadCommunicationLogged" => &["summary"],
        "LeadFieldsUpdated" => {
            let Some(changes) = payload.get_mut("changes").and_then(Value::as_array_mut) else {
                return;
            };
            for change in changes {
                let Some(field) = change.get("field").and_then(Value::as_str) else {
                    continue;
                };
                if !PERSONAL_LEAD_FIELDS.contains(&field) {
                    continue;
                }
                let field = field.to_owned();
                for side in ["before", "after"] {
                    if let Some(value) = change.get_mut(side) {
                        each(&format!("{field}.{side}"), value);
                    }
                }
            }
            return;
        }
        _ => return,
    };
    for field in fields {
        if let Some(value) = payload.get_mut(*field) {
            each(field, value);
        }
    }
}

fn value_context(lead: Uuid, event_type: &str, place: &str) -> Vec<u8> {
    [
        b"crm lead value\0".as_slice(),
        lead.as_bytes(),
        event_type.as_bytes(),
        b"\0",
        place.as_bytes(),
    ]
    .concat()
}

/// The payload (JSON text) of an event of `event_type` on `lead`'s stream with
/// each personal value sealed with `key`. Other payloads come back as they are.
///
/// # Errors
/// [`KeyError::Randomness`]; a payload that is not JSON comes back as it is (the
/// store refuses it).
pub fn seal(
    key: &LeadKey,
    lead: Uuid,
    event_type: &str,
    payload: &str,
) -> Result<String, KeyError> {
    if !is_personal(event_type) {
        return Ok(payload.to_owned());
    }
    let Ok(mut json) = serde_json::from_str::<Value>(payload) else {
        return Ok(payload.to_owned());
    };
    let mut failed = None;
    personal_values(event_type, &mut json, &mut |place, value| {
        if value.is_null() || failed.is_some() {
            return;
        }
        let plain = value.to_string();
        match seal_bytes(
            &key.cipher,
            plain.as_bytes(),
            &value_context(lead, event_type, place),
        ) {
            Ok(sealed) => {
                *value = serde_json::json!({
                    "sealed": base64::engine::general_purpose::STANDARD.encode(sealed)
                });
            }
            Err(error) => failed = Some(error),
        }
    });
    match failed {
        Some(error) => Err(error),
        None => Ok(json.to_string()),
    }
}

/// What a reader holds for a lead's personal values.
#[derive(Debug, Clone)]
pub enum Access {
    /// The lead's key: sealed values open.
    Key(LeadKey),
    /// The lead was erased: every personal value, sealed or not, reads as
    /// [`ERASED`].
    Erased,
    /// No key was ever made for the lead (its events predate sealing): plain
    /// values read as they are.
    Plain,
}

/// The payload with its personal values as `access` allows: opened, or
/// [`ERASED`]. A sealed value that does not open (altered bytes, another key)
/// also reads as [`ERASED`]: never as garbage.
#[must_use]
pub fn open(access: &Access, lead: Uuid, event_type: &str, payload: &str) -> String {
    if !is_personal(event_type)
        || (matches!(access, Access::Plain | Access::Key(_)) && !payload.contains("\"sealed\""))
    {
        return payload.to_owned();
    }
    let Ok(mut json) = serde_json::from_str::<Value>(payload) else {
        return payload.to_owned();
    };
    personal_values(event_type, &mut json, &mut |place, value| {
        if value.is_null() {
            return;
        }
        let sealed = value
            .get("sealed")
            .and_then(Value::as_str)
            .filter(|_| value.as_object().is_some_and(|o| o.len() == 1));
        let opened = match (access, sealed) {
            (Access::Erased, _) => None,
            (Access::Plain, None) | (Access::Key(_), None) => return,
            (Access::Plain, Some(_)) => None,
            (Access::Key(key), Some(sealed)) => base64::engine::general_purpose::STANDARD
                .decode(sealed)
                .ok()
                .and_then(|bytes| {
                    open_bytes(&key.cipher, &bytes, &value_context(lead, event_type, place))
                })
                .and_then(|plain| serde_json::from_slice::<Value>(&plain).ok()),
        };
        *value = opened.unwrap_or_else(|| Value::String(ERASED.to_owned()));
    });
    json.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (MasterKey, Uuid, LeadKey, Vec<u8>) {
        let master = MasterKey::generate().unwrap();
        let lead = Uuid::now_v7();
        let (key, sealed) = master.new_lead_key(lead).unwrap();
        (master, lead, key, sealed)
    }

    #[test]
    fn personal_values_are_sealed_and_open_with_the_leads_key_only() {
        let (master, lead, key, stored) = keys();
        let payload = r#"{"name":"Dana Novak","email":null,"phone":"+1 555 0100","source":"Zillow","stage":"new","tags":[],"assigned_agent_id":null}"#;
        let sealed = seal(&key, lead, "LeadCreated", payload).unwrap();
        assert!(
            !sealed.contains("Dana") && !sealed.contains("0100"),
            "{sealed}"
        );
        assert!(sealed.contains("Zillow") && sealed.contains(r#""email":null"#));
        let key = master.open_lead_key(lead, &stored).unwrap();
        let opened: Value =
            serde_json::from_str(&open(&Access::Key(key), lead, "LeadCreated", &sealed)).unwrap();
        let original: Value = serde_json::from_str(payload).unwrap();
        assert_eq!(opened, original);
        // Another lead's key, or the same key for another lead: erased, not garbage.
        let (_, other, other_key, _) = keys();
        for (access, at) in [(Access::Key(other_key), lead), (Access::Erased, lead)] {
            let read: Value =
                serde_json::from_str(&open(&access, at, "LeadCreated", &sealed)).unwrap();
            assert_eq!(read["name"], ERASED);
            assert_eq!(read["source"], "Zillow");
        }
        assert!(master.open_lead_key(other, &stored).is_none());
    }

    #[test]
    fn a_sealed_value_moved_to_another_field_does_not_open() {
        let (_, lead, key, _) = keys();
        let sealed = seal(
            &key,
            lead,
            "LeadCreated",
            r#"{"name":"A","email":"a@x.test"}"#,
        )
        .unwrap();
        let mut json: Value = serde_json::from_str(&sealed).unwrap();
        json["name"] = json["email"].clone();
        let read: Value = serde_json::from_str(&open(
            &Access::Key(key),
            lead,
            "LeadCreated",
            &json.to_string(),
        ))
        .unwrap();
        assert_eq!(read["name"], ERASED);
        assert_eq!(read["email"], "a@x.test");
    }

    #[test]
    fn only_personal_fields_of_a_change_are_sealed() {
        let (_, lead, key, _) = keys();
        let payload = r#"{"changes":[{"field":"email","before":null,"after":"d@x.test"},{"field":"source","before":"a","after":"b"}]}"#;
        let sealed = seal(&key, lead, "LeadFieldsUpdated", payload).unwrap();
        assert!(!sealed.contains("d@x.test") && sealed.contains(r#""after":"b""#));
        let erased: Value =
            serde_json::from_str(&open(&Access::Erased, lead, "LeadFieldsUpdated", &sealed))
                .unwrap();
        assert_eq!(erased["changes"][0]["before"], Value::Null);
        assert_eq!(erased["changes"][0]["after"], ERASED);
        assert_eq!(erased["changes"][1]["after"], "b");
    }

    #[test]
    fn plain_values_of_older_events_read_until_erased() {
        let lead = Uuid::now_v7();
        let payload = r#"{"note_id":"00000000-0000-0000-0000-000000000001","body":"call back"}"#;
        assert_eq!(
            open(&Access::Plain, lead, "LeadNoteAdded", payload),
            payload
        );
        let erased: Value =
            serde_json::from_str(&open(&Access::Erased, lead, "LeadNoteAdded", payload)).unwrap();
        assert_eq!(erased["body"], ERASED);
    }

    #[test]
    fn a_master_key_proves_itself_and_no_other() {
        let (master, ..) = keys();
        let other = MasterKey::generate().unwrap();
        let proof = master.proof().unwrap();
        assert!(master.proves(&proof));
        assert!(!other.proves(&proof));
    }

    #[test]
    fn a_master_key_file_reads_back_the_same_key() {
        let dir = std::env::temp_dir().join(format!("crm-vault-{}", Uuid::now_v7()));
        let path = MasterKey::generate_file(&dir).unwrap();
        let key = MasterKey::read(&path).unwrap();
        assert_eq!(MasterKey::read(&path).unwrap().id(), key.id());
        assert!(MasterKey::generate_file(&dir).is_err(), "never over a key");
        std::fs::write(dir.join("bad"), "not a key").unwrap();
        assert!(MasterKey::read(&dir.join("bad")).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
