//! Loading aggregates: read a stream, decode (upcasting old versions) and fold.

use crm_events::ids::{ImpersonationId, LeadId, SiteId, UserId};
use crm_events::{DomainEvent, EventStore, RecordedEvent, StoreError, StreamKey, StreamType};

use super::error::AppError;
use crate::domain::impersonation::Impersonation;
use crate::domain::lead::Lead;
use crate::domain::settings::Settings;
use crate::domain::site::Site;
use crate::domain::user::User;

/// An aggregate's state and the stream version it was folded at.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    pub state: T,
    pub version: u64,
}

pub(crate) fn site_stream(id: SiteId) -> StreamKey {
    StreamKey::new(StreamType::Site, id.as_uuid())
}
pub(crate) fn user_stream(id: UserId) -> StreamKey {
    StreamKey::new(StreamType::User, id.as_uuid())
}
pub(crate) fn settings_stream(id: UserId) -> StreamKey {
    StreamKey::new(StreamType::Settings, id.as_uuid())
}
pub(crate) fn lead_stream(id: LeadId) -> StreamKey {
    StreamKey::new(StreamType::Lead, id.as_uuid())
}
pub(crate) fn impersonation_stream(id: ImpersonationId) -> StreamKey {
    StreamKey::new(StreamType::Impersonation, id.as_uuid())
}
/// The leads impersonation `id` opened.
pub(crate) fn views_stream(id: ImpersonationId) -> StreamKey {
    StreamKey::new(StreamType::Views, id.as_uuid())
}

/// Reads and decodes a stream; `None` when it does not exist.
async fn history(
    store: &EventStore,
    stream: StreamKey,
) -> Result<Option<Vec<(RecordedEvent, DomainEvent)>>, AppError> {
    let events = match store.read_stream(stream, 0).await {
        Ok(events) => events,
        Err(StoreError::StreamNotFound(_)) => return Ok(None),
        Err(other) => return Err(other.into()),
    };
    events
        .into_iter()
        .map(|e| DomainEvent::decode(&e).map(|d| (e, d)))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
        .map_err(AppError::Store)
}

/// Folds a history whose first event creates the aggregate.
fn fold<T>(
    history: Vec<(RecordedEvent, DomainEvent)>,
    create: impl FnOnce(&RecordedEvent, &DomainEvent) -> Option<T>,
    apply: impl Fn(&mut T, &DomainEvent),
) -> Option<Loaded<T>> {
    let mut events = history.into_iter();
    let (first, event) = events.next()?;
    let mut state = create(&first, &event)?;
    let mut version = first.stream_version;
    for (recorded, event) in events {
        apply(&mut state, &event);
        version = recorded.stream_version;
    }
    Some(Loaded { state, version })
}

pub(crate) async fn load_site(store: &EventStore, id: SiteId) -> Result<Loaded<Site>, AppError> {
    let history = history(store, site_stream(id))
        .await?
        .ok_or(AppError::NotFound("site"))?;
    fold(
        history,
        |_, e| match e {
            DomainEvent::SiteCreated(created) => Some(Site::created(created)),
            _ => None,
        },
        Site::apply,
    )
    .ok_or(AppError::NotFound("site"))
}

pub(crate) async fn load_user(store: &EventStore, id: UserId) -> Result<Loaded<User>, AppError> {
    let history = history(store, user_stream(id))
        .await?
        .ok_or(AppError::NotFound("user"))?;
    fold(
        history,
        |first, e| match e {
            DomainEvent::UserCreated(created) => Some(User::created(id, first.site_id, created)),
            _ => None,
        },
        User::apply,
    )
    .ok_or(AppError::NotFound("user"))
}

pub(crate) async fn load_lead(store: &EventStore, id: LeadId) -> Result<Loaded<Lead>, AppError> {
    let history = history(store, lead_stream(id))
        .await?
        .ok_or(AppError::NotFound("lead"))?;
    fold(
        history,
        |first, e| match e {
            DomainEvent::LeadCreated(created) => Some(Lead::created(first.site_id, created)),
            _ => None,
        },
        Lead::apply,
    )
    .ok_or(AppError::NotFound("lead"))
}

/// A user's settings; defaults (version 0) until they first change something.
pub(crate) async fn load_settings(
    store: &EventStore,
    id: UserId,
) -> Result<Loaded<Settings>, AppError> {
    let Some(history) = history(store, settings_stream(id)).await? else {
        return Ok(Loaded {
            state: Settings::default(),
            version: 0,
        });
    };
    let mut state = Settings::default();
    let mut version = 0;
    for (recorded, event) in history {
        state.apply(&event);
        version = recorded.stream_version;
    }
    Ok(Loaded { state, version })
}

pub(crate) async fn load_impersonation(
    store: &EventStore,
    id: ImpersonationId,
) -> Result<Loaded<Impersonation>, AppError> {
    let history = history(store, impersonation_stream(id))
        .await?
        .ok_or(AppError::NotFound("impersonation"))?;
    fold(
        history,
        |first, e| match e {
            DomainEvent::ImpersonationStarted(s) => {
                Some(Impersonation::started(s, first.recorded_at))
            }
            _ => None,
        },
        Impersonation::apply,
    )
    .ok_or(AppError::NotFound("impersonation"))
}

/// An aggregate whose state can be brought forward by later events of its stream.
pub(crate) trait Fold: Clone + Send {
    fn apply_event(&mut self, event: &DomainEvent);
}

impl Fold for Lead {
    fn apply_event(&mut self, event: &DomainEvent) {
        self.apply(event);
    }
}

impl Fold for User {
    fn apply_event(&mut self, event: &DomainEvent) {
        self.apply(event);
    }
}

impl Fold for Site {
    fn apply_event(&mut self, event: &DomainEvent) {
        self.apply(event);
    }
}

impl Fold for Impersonation {
    fn apply_event(&mut self, event: &DomainEvent) {
        self.apply(event);
    }
}

/// How many aggregates of one kind a cache keeps.
const CACHE_CAPACITY: usize = 20_000;

/// Aggregates recently loaded, each with the version it was folded at: loading one
/// again reads only the events after that version (one small query), instead of its
/// whole history. Appends by anyone, in any process, are picked up by that read.
#[derive(Debug)]
pub(crate) struct Cache<T> {
    entries: std::sync::Mutex<std::collections::HashMap<StreamKey, Loaded<T>>>,
}

impl<T> Default for Cache<T> {
    fn default() -> Self {
        Self {
            entries: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }
}

impl<T: Fold> Cache<T> {
    /// The aggregate of `stream`, up to date; `first_load` folds it from scratch when
    /// it is not cached.
    pub(crate) async fn load<F, Fut>(
        &self,
        store: &EventStore,
        stream: StreamKey,
        first_load: F,
    ) -> Result<Loaded<T>, AppError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Loaded<T>, AppError>>,
    {
        let cached = self
            .entries
            .lock()
            .ok()
            .and_then(|entries| entries.get(&stream).cloned());
        let loaded = match cached {
            None => first_load().await?,
            Some(mut loaded) => {
                for recorded in store.read_stream(stream, loaded.version).await? {
                    let event = DomainEvent::decode(&recorded).map_err(AppError::Store)?;
                    loaded.state.apply_event(&event);
                    loaded.version = recorded.stream_version;
                }
                loaded
            }
        };
        self.keep(stream, loaded.clone());
        Ok(loaded)
    }

    /// The aggregate as last kept, without asking the store whether it moved on.
    pub(crate) fn cached(&self, stream: &StreamKey) -> Option<Loaded<T>> {
        self.entries
            .lock()
            .ok()
            .and_then(|entries| entries.get(stream).cloned())
    }

    /// Drops what is kept of `stream` (an erased lead's personal values).
    pub(crate) fn forget(&self, stream: &StreamKey) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(stream);
        }
    }

    /// Keeps `loaded` unless a later version of it is kept already.
    pub(crate) fn keep(&self, stream: StreamKey, loaded: Loaded<T>) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries
                .get(&stream)
                .is_some_and(|cached| cached.version > loaded.version)
            {
                return;
            }
            if entries.len() >= CACHE_CAPACITY && !entries.contains_key(&stream) {
                // Crude but bounded: start over rather than track recency.
                entries.clear();
            }
            entries.insert(stream, loaded);
        }
    }
}

/// The caches of one application.
#[derive(Debug, Default)]
pub(crate) struct Caches {
    pub leads: Cache<Lead>,
    pub users: Cache<User>,
    pub sites: Cache<Site>,
    pub impersonations: Cache<Impersonation>,
}

impl super::App {
    pub(crate) async fn load_lead(&self, id: LeadId) -> Result<Loaded<Lead>, AppError> {
        self.caches
            .leads
            .load(&self.store, lead_stream(id), || load_lead(&self.store, id))
            .await
    }

    pub(crate) async fn load_user(&self, id: UserId) -> Result<Loaded<User>, AppError> {
        self.caches
            .users
            .load(&self.store, user_stream(id), || load_user(&self.store, id))
            .await
    }

    pub(crate) async fn load_site(&self, id: SiteId) -> Result<Loaded<Site>, AppError> {
        self.caches
            .sites
            .load(&self.store, site_stream(id), || load_site(&self.store, id))
            .await
    }

    pub(crate) async fn load_impersonation(
        &self,
        id: ImpersonationId,
    ) -> Result<Loaded<Impersonation>, AppError> {
        self.caches
            .impersonations
            .load(&self.store, impersonation_stream(id), || {
                load_impersonation(&self.store, id)
            })
            .await
    }
}
