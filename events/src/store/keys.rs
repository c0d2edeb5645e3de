//! The store's side of sealing (see [`crate::vault`]): which master key the
//! database's lead keys are sealed with, each lead's key beside the log, sealing
//! an append's personal values and opening them as events are read.
//!
//! A lead's key is made with its first sealed event and written in that append's
//! transaction; erasing the lead (`LeadErased`) destroys it in the erasure's
//! transaction. Keys this process opened are kept in memory to seal later
//! appends: one kept after the lead was erased elsewhere can only seal an append
//! that the stream's version refuses, or values nobody can open again. Reads
//! always ask the database which keys still exist, so an erasure by another
//! server is honoured by the next read.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::Utc;
use uuid::Uuid;

use super::side::SideWrite;
use crate::database::Database;
use crate::envelope::{RecordedEvent, StreamAppend, StreamType};
use crate::error::StoreError;
use crate::on_pool;
use crate::vault::{self, Access, LeadKey, MasterKey};

/// At most this many lead keys are kept in memory (then they are dropped and
/// opened again as needed).
const KEPT_AT_MOST: usize = 100_000;

/// The event that destroys a lead's key.
pub const ERASURE: &str = "LeadErased";

/// The master key, if the store was given one, and the lead keys opened with it.
#[derive(Debug, Default)]
pub(crate) struct Keys {
    master: Option<MasterKey>,
    /// Lead id -> the key as stored (sealed) and opened.
    kept: Mutex<HashMap<Uuid, (Vec<u8>, LeadKey)>>,
}

/// What sealing an append made: keys to keep once it commits (not when it was a
/// replay, whose keys were never stored), and leads it erases.
#[derive(Debug, Default)]
pub(crate) struct Sealed {
    new_keys: Vec<(Uuid, Vec<u8>, LeadKey)>,
    erased: Vec<Uuid>,
    /// Each event's payload as it was given (in order across the appends), where
    /// sealing changed it: what the commit is announced with.
    pub(crate) opened: Vec<Option<String>>,
}

impl Keys {
    pub(crate) fn new(master: Option<MasterKey>) -> Self {
        Self {
            master,
            kept: Mutex::default(),
        }
    }

    /// Checks the master key against the database's proof (recording the proof on
    /// first use): a wrong key is refused before anything is read or written
    /// with it.
    pub(crate) async fn check(&self, db: &Database) -> Result<(), StoreError> {
        let stored: Option<(String, Vec<u8>)> = on_pool!(db, |pool| sqlx::query_as(
            "SELECT key_id, proof FROM master_key WHERE id = 1"
        )
        .fetch_optional(pool)
        .await?);
        let Some(master) = &self.master else {
            return Ok(());
        };
        match stored {
            Some((_, proof)) if master.proves(&proof) => Ok(()),
            Some((key_id, _)) => Err(StoreError::WrongMasterKey {
                expected: key_id,
                given: master.id().to_owned(),
            }),
            None => {
                let proof = master.proof().map_err(StoreError::key)?;
                on_pool!(db, |pool| sqlx::query(
                    "INSERT INTO master_key (id, key_id, proof) VALUES (1, $1, $2) \
                     ON CONFLICT (id) DO NOTHING"
                )
                .bind(master.id())
                .bind(proof)
                .execute(pool)
                .await
                .map(drop)?);
                // Another process may have recorded its own key first.
                Box::pin(self.check(db)).await
            }
        }
    }

    /// The id of the master key this database's lead keys are sealed with, if any
    /// was ever used.
    pub(crate) async fn recorded(db: &Database) -> Result<Option<String>, StoreError> {
        Ok(on_pool!(db, |pool| sqlx::query_scalar(
            "SELECT key_id FROM master_key WHERE id = 1"
        )
        .fetch_optional(pool)
        .await?))
    }

    fn master(&self) -> Result<&MasterKey, StoreError> {
        self.master.as_ref().ok_or(StoreError::NoMasterKey)
    }

    /// Seals the personal values of `appends` in place, adding to `side` the
    /// keys it makes and the keys an erasure destroys.
    pub(crate) async fn seal(
        &self,
        db: &Database,
        appends: &mut [StreamAppend],
        side: &mut Vec<SideWrite>,
    ) -> Result<Sealed, StoreError> {
        let mut sealed = Sealed::default();
        let mut opened: Vec<Vec<Option<String>>> =
            appends.iter().map(|a| vec![None; a.events.len()]).collect();
        for (append, opened) in appends.iter_mut().zip(&mut opened) {
            if append.stream.stream_type != StreamType::Lead {
                continue;
            }
            let lead = append.stream.id;
            if append.events.iter().any(|e| e.event_type == ERASURE) {
                // First of the append's rows: whoever checks the key under its
                // lock (a kept answer about to be written) waits for the erasure
                // and then sees it, or went before and is then cleared with it.
                side.insert(
                    0,
                    SideWrite::one(
                        "lead key",
                        "INSERT INTO lead_keys (lead_id, site_id, sealed_key, erased_at) \
                         VALUES ($1, $2, NULL, $3) ON CONFLICT (lead_id) DO UPDATE \
                         SET sealed_key = NULL, erased_at = COALESCE(lead_keys.erased_at, excluded.erased_at)",
                        vec![lead.into(), append.site_id.as_uuid().into(), Utc::now().into()],
                    ),
                );
                // The records that recognise a retried append hold a hash of
                // what it appended, personal values included: they go too (a
                // retry then appends again, and is refused as the lead is gone).
                side.push(SideWrite::any(
                    "idempotency records",
                    "DELETE FROM idempotency_keys WHERE site_id = $1 AND outcome LIKE $2",
                    vec![append.site_id.as_uuid().into(), format!("%{lead}%").into()],
                ));
                sealed.erased.push(lead);
            }
            if !append
                .events
                .iter()
                .any(|e| vault::is_personal(&e.event_type))
            {
                continue;
            }
            // A stream that begins here has no key yet; another has one, unless its
            // events predate sealing.
            let begins = append
                .events
                .first()
                .is_some_and(|e| e.event_type == "LeadCreated");
            let kept = if begins {
                None
            } else {
                self.key_for_sealing(db, lead).await?
            };
            let key =
                match kept {
                    Some(key) => key,
                    None => {
                        // The lead's first sealed event: its key is made now, and
                        // stored with it (a row there already refuses the append).
                        let (key, stored) =
                            self.master()?.new_lead_key(lead).map_err(StoreError::key)?;
                        side.push(SideWrite::one(
                        "lead key",
                        "INSERT INTO lead_keys (lead_id, site_id, sealed_key) VALUES ($1, $2, $3)",
                        vec![lead.into(), append.site_id.as_uuid().into(), stored.clone().into()],
                    ));
                        sealed.new_keys.push((lead, stored, key.clone()));
                        key
                    }
                };
            for (event, opened) in append.events.iter_mut().zip(opened.iter_mut()) {
                let sealed_text = vault::seal(&key, lead, &event.event_type, &event.payload)
                    .map_err(StoreError::key)?;
                if sealed_text != event.payload {
                    *opened = Some(std::mem::replace(&mut event.payload, sealed_text));
                }
            }
        }
        sealed.opened = opened.into_iter().flatten().collect();
        Ok(sealed)
    }

    /// Records what a committed append did to the keys.
    pub(crate) fn committed(&self, sealed: Sealed, replayed: bool) {
        let Ok(mut kept) = self.kept.lock() else {
            return;
        };
        for lead in sealed.erased {
            kept.remove(&lead);
        }
        if replayed {
            return;
        }
        if kept.len() + sealed.new_keys.len() > KEPT_AT_MOST {
            kept.clear();
        }
        for (lead, stored, key) in sealed.new_keys {
            kept.insert(lead, (stored, key));
        }
    }

    /// The key to seal `lead`'s new values with: kept, or stored; `None` when
    /// the lead has none yet.
    async fn key_for_sealing(
        &self,
        db: &Database,
        lead: Uuid,
    ) -> Result<Option<LeadKey>, StoreError> {
        if let Some((_, key)) = self
            .kept
            .lock()
            .ok()
            .and_then(|kept| kept.get(&lead).cloned())
        {
            return Ok(Some(key));
        }
        let mut stored = self.stored(db, &[lead]).await?;
        match stored.remove(&lead) {
            None => Ok(None),
            Some(None) => Err(StoreError::LeadErased(lead)),
            Some(Some(sealed)) => self.open_key(lead, &sealed).map(Some),
        }
    }

    /// The stored keys of `leads`: `Some(None)` for an erased lead, absent for a
    /// lead without a row.
    async fn stored(
        &self,
        db: &Database,
        leads: &[Uuid],
    ) -> Result<HashMap<Uuid, Option<Vec<u8>>>, StoreError> {
        let mut found = HashMap::with_capacity(leads.len());
        for chunk in super::bulk::key_lists(leads) {
            let list = super::bulk::numbered(1, chunk.len());
            let sql =
                format!("SELECT lead_id, sealed_key FROM lead_keys WHERE lead_id IN ({list})");
            let rows: Vec<(Uuid, Option<Vec<u8>>)> = on_pool!(db, |pool| {
                let mut query = sqlx::query_as(&sql);
                for lead in &chunk {
                    query = query.bind(*lead);
                }
                query.fetch_all(pool).await?
            });
            found.extend(rows);
        }
        Ok(found)
    }

    /// Opens a stored key (keeping it), with the master key.
    fn open_key(&self, lead: Uuid, sealed: &[u8]) -> Result<LeadKey, StoreError> {
        if let Some((_, key)) = self
            .kept
            .lock()
            .ok()
            .and_then(|kept| kept.get(&lead).filter(|(s, _)| s == sealed).cloned())
        {
            return Ok(key);
        }
        let key = self
            .master()?
            .open_lead_key(lead, sealed)
            .ok_or(StoreError::LeadKeyUnreadable(lead))?;
        if let Ok(mut kept) = self.kept.lock() {
            if kept.len() >= KEPT_AT_MOST {
                kept.clear();
            }
            kept.insert(lead, (sealed.to_vec(), key.clone()));
        }
        Ok(key)
    }

    /// Opens the personal values of `events` as their leads' keys allow: the
    /// plaintext while a lead's key exists, [`vault::ERASED`] once it is
    /// destroyed. One query for the whole batch, none when it holds no
    /// personal values.
    pub(crate) async fn open(
        &self,
        db: &Database,
        mut events: Vec<RecordedEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut leads: Vec<Uuid> = events
            .iter()
            .filter(|e| {
                e.stream.stream_type == StreamType::Lead && vault::is_personal(&e.event_type)
            })
            .map(|e| e.stream.id)
            .collect();
        if leads.is_empty() {
            return Ok(events);
        }
        leads.sort_unstable();
        leads.dedup();
        let stored = self.stored(db, &leads).await?;
        let mut access: HashMap<Uuid, Access> = HashMap::with_capacity(leads.len());
        for lead in leads {
            let granted = match stored.get(&lead) {
                None => Access::Plain,
                Some(None) => Access::Erased,
                Some(Some(sealed)) => Access::Key(self.open_key(lead, sealed)?),
            };
            access.insert(lead, granted);
        }
        for event in &mut events {
            if let Some(granted) = access.get(&event.stream.id) {
                if event.stream.stream_type == StreamType::Lead
                    && vault::is_personal(&event.event_type)
                {
                    event.payload =
                        vault::open(granted, event.stream.id, &event.event_type, &event.payload);
                }
            }
        }
        Ok(events)
    }
}
