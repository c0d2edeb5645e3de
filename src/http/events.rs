//! The raw event log of the caller's site (owners, admins, auditors): pages, and a
//! Server-Sent Events stream that resumes from `Last-Event-ID` without gaps.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use crm_events::{Position, RecordedEvent};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::bodies::List;
use super::error::{ApiError, ApiResult, Problem};
use super::extract::{Auth, Query};
use super::AppState;
use crate::app::streams::Followed;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_events))
        .routes(routes!(stream_events))
}

/// A stored event with its whole envelope.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Envelope {
    pub position: i64,
    pub event_id: Uuid,
    pub site_id: Uuid,
    pub stream_type: String,
    pub stream_id: Uuid,
    pub stream_version: u64,
    pub event_type: String,
    pub schema_version: u16,
    /// As stored (at `schema_version`).
    pub payload: Value,
    pub actor_id: Uuid,
    pub subject_id: Uuid,
    pub impersonation_id: Option<Uuid>,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub idempotency_key: Option<String>,
    pub recorded_at: DateTime<Utc>,
    /// Hex SHA-256 of the site's previous event.
    pub prev_hash: String,
    /// Hex SHA-256 of this event's content and `prev_hash`.
    pub hash: String,
}

impl From<RecordedEvent> for Envelope {
    fn from(e: RecordedEvent) -> Self {
        Self {
            position: e.position.0,
            event_id: e.event_id.as_uuid(),
            site_id: e.site_id.as_uuid(),
            stream_type: e.stream.stream_type.as_str().to_owned(),
            stream_id: e.stream.id,
            stream_version: e.stream_version,
            event_type: e.event_type,
            schema_version: e.schema_version,
            payload: serde_json::from_str(&e.payload).unwrap_or(Value::Null),
            actor_id: e.actor_id.as_uuid(),
            subject_id: e.subject_id.as_uuid(),
            impersonation_id: e.impersonation_id.map(|i| i.as_uuid()),
            correlation_id: e.correlation_id.as_uuid(),
            causation_id: e.causation_id,
            idempotency_key: e.idempotency_key,
            recorded_at: e.recorded_at,
            prev_hash: hex::encode(e.prev_hash),
            hash: hex::encode(e.hash),
        }
    }
}

/// `GET /api/events` query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Events after this position (0 for the first).
    after: Option<i64>,
    /// 1 to 500 (default 50).
    limit: Option<u32>,
}

/// The site's events after a position, in order.
#[utoipa::path(get, path = "/api/events", tag = "events", security(("bearer" = [])), params(EventsQuery),
    responses((status = 200, body = List<Envelope>), (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn list_events(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Json<List<Envelope>>> {
    let after = Position(q.after.unwrap_or(0).max(0));
    let limit = crm_projections::query::clamp_limit(q.limit);
    let events = state.app.site_events(&ctx, after, limit).await?;
    let next_cursor = (events.len() == limit as usize)
        .then(|| events.last().map(|e| e.position.0.to_string()))
        .flatten();
    Ok(Json(List {
        items: events.into_iter().map(Envelope::from).collect(),
        next_cursor,
    }))
}

/// `GET /api/events/stream` query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Start after this position (`Last-Event-ID` wins when both are sent).
    after: Option<i64>,
}

/// The site's events as Server-Sent Events: each `id:` is the event's position,
/// `event:` its type, `data:` its envelope. Reconnect with `Last-Event-ID` to resume
/// exactly after the last event received. The stream ends with `event: end`
/// (`data: {"reason": …}`) once the session ends or loses the right to read it.
#[utoipa::path(get, path = "/api/events/stream", tag = "events", security(("bearer" = [])), params(StreamQuery),
    responses((status = 200, description = "text/event-stream", content_type = "text/event-stream"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 422, body = Problem)))]
async fn stream_events(
    State(state): State<AppState>,
    Auth(ctx): Auth,
    headers: HeaderMap,
    Query(q): Query<StreamQuery>,
) -> ApiResult<impl IntoResponse> {
    let resume = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::invalid(
                        "Last-Event-ID",
                        "expected the position of the last event received",
                    )
                })?,
        ),
    };
    let after = Position(resume.or(q.after).unwrap_or(0).max(0));
    let events = state
        .app
        .follow_site_events(ctx, after)?
        .map(|followed| Ok::<_, Infallible>(sse_event(followed)));
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// One frame of the stream: an event (`id:` its position, `event:` its type,
/// `data:` its envelope), or the stream's end and why.
fn sse_event(followed: Followed) -> Event {
    match followed {
        Followed::Event(event) => envelope_event(*event),
        Followed::Ended(reason) => Event::default()
            .event("end")
            .data(serde_json::json!({ "reason": reason }).to_string()),
        Followed::Interrupted => Event::default()
            .event("error")
            .data("the stream was interrupted; reconnect with Last-Event-ID"),
    }
}

fn envelope_event(e: RecordedEvent) -> Event {
    let id = e.position.0.to_string();
    let kind = e.event_type.clone();
    let data = serde_json::to_string(&Envelope::from(e)).unwrap_or_default();
    Event::default().id(id).event(kind).data(data)
}
