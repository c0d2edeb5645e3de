//! Schema evolution: stored events keep the schema version they were written at, and
//! are brought up to the current version on read, one step at a time.
//!
//! An upcaster is a pure function from the JSON payload at version `n` to version
//! `n + 1`. Adding a version means: bump it in the catalogue, add the step here, and
//! add stored events of the old version to the fixture the tests read back.

use serde_json::{Map, Value};

use crate::catalog::{self, DomainEvent};

type Step = fn(Map<String, Value>) -> Result<Map<String, Value>, String>;

/// `(event type, from version, step to from version + 1)`.
const STEPS: &[(&str, u16, Step)] = &[
    ("LeadCreated", 1, lead_created_v1_to_v2),
    ("LeadCommunicationLogged", 1, communication_logged_v1_to_v2),
];

/// Brings `payload` of `event_type` from `schema_version` to the catalogue's current
/// version.
///
/// # Errors
/// A message when the type is unknown, the version is newer than this build knows, a
/// step is missing, or the old payload lacks what its step needs.
pub fn upcast(event_type: &str, schema_version: u16, payload: Value) -> Result<Value, String> {
    let info =
        catalog::lookup(event_type).ok_or_else(|| format!("unknown event type {event_type:?}"))?;
    if schema_version == 0 || schema_version > info.schema_version {
        return Err(format!(
            "{event_type} v{schema_version} is not a version this build knows (current: v{})",
            info.schema_version
        ));
    }
    if schema_version == info.schema_version {
        return Ok(payload);
    }
    let Value::Object(mut object) = payload else {
        return Err(format!("{event_type} payload is not a JSON object"));
    };
    for version in schema_version..info.schema_version {
        let step = STEPS
            .iter()
            .find(|(name, from, _)| *name == event_type && *from == version)
            .map(|(_, _, step)| step)
            .ok_or_else(|| format!("no upcaster for {event_type} v{version}"))?;
        object = step(object).map_err(|e| format!("upcasting {event_type} v{version}: {e}"))?;
    }
    Ok(Value::Object(object))
}

/// v1 kept tags as one comma-separated string and named the assignee `assigned_to`.
fn lead_created_v1_to_v2(mut v1: Map<String, Value>) -> Result<Map<String, Value>, String> {
    let tags = match v1.remove("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(joined)) => joined
            .split(',')
            .map(str::trim)
            .filter(|tag| !tag.is_empty())
            .map(|tag| Value::String(tag.to_owned()))
            .collect(),
        Some(other) => return Err(format!("tags should be a string, found {other}")),
    };
    v1.insert("tags".to_owned(), Value::Array(tags));
    let assignee = v1.remove("assigned_to").unwrap_or(Value::Null);
    v1.insert("assigned_agent_id".to_owned(), assignee);
    Ok(v1)
}

/// v1 said `kind` for the channel and `outbound: bool` for the direction.
fn communication_logged_v1_to_v2(mut v1: Map<String, Value>) -> Result<Map<String, Value>, String> {
    let channel = v1.remove("kind").ok_or("missing kind")?;
    let direction = match v1.remove("outbound") {
        Some(Value::Bool(true)) => "outbound",
        Some(Value::Bool(false)) => "inbound",
        other => return Err(format!("outbound should be a boolean, found {other:?}")),
    };
    v1.insert("channel".to_owned(), channel);
    v1.insert("direction".to_owned(), Value::String(direction.to_owned()));
    Ok(v1)
}

impl DomainEvent {
    /// Reads a stored event back in typed form, upcasting older schema versions.
    ///
    /// # Errors
    /// [`StoreError::CorruptEvent`] naming the event's position when its payload is
    /// not JSON, its type or version is unknown, or the payload does not match its type.
    pub fn decode(event: &crate::envelope::RecordedEvent) -> Result<Self, crate::StoreError> {
        let corrupt = |reason: String| crate::StoreError::CorruptEvent {
            position: event.position,
            reason,
        };
        let payload: Value = serde_json::from_str(&event.payload)
            .map_err(|e| corrupt(format!("payload is not JSON: {e}")))?;
        let current = upcast(&event.event_type, event.schema_version, payload).map_err(corrupt)?;
        Self::from_current(&event.event_type, current).map_err(corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lead_created_v1_splits_tags_and_renames_the_assignee() {
        let v2 = upcast(
            "LeadCreated",
            1,
            json!({"name": "Ann", "tags": "buyer, , vip", "assigned_to": null, "stage": "new"}),
        )
        .unwrap();
        assert_eq!(v2["tags"], json!(["buyer", "vip"]));
        assert_eq!(v2["assigned_agent_id"], Value::Null);
        assert!(v2.get("assigned_to").is_none());
    }

    #[test]
    fn a_version_newer_than_the_build_is_refused() {
        let error = upcast("LeadCreated", 3, json!({})).unwrap_err();
        assert!(error.contains("v3"), "{error}");
    }

    #[test]
    fn a_current_payload_passes_through_unchanged() {
        let payload = json!({"tag": "x"});
        assert_eq!(upcast("LeadTagAdded", 1, payload.clone()).unwrap(), payload);
    }
}
