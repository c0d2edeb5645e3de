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
