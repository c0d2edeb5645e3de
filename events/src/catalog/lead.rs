//! Events of a lead's stream.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::values::{Channel, Direction, Stage};
use crate::envelope::FieldChange;
use crate::ids::{CommunicationId, NoteId, TaskId, UserId};

/// A lead was created (schema version 2; version 1 kept tags as one comma-separated
/// string and named the assignee `assigned_to`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadCreated {
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub source: Option<String>,
    pub stage: Stage,
    pub tags: Vec<String>,
    pub assigned_agent_id: Option<UserId>,
}

/// Contact fields (name, email, phone, source) changed, field by field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadFieldsUpdated {
    pub changes: Vec<FieldChange>,
}

/// The lead moved to another stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadStageChanged {
    pub from: Stage,
    pub to: Stage,
}

/// The lead was assigned to another agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadReassigned {
    pub from: Option<UserId>,
    pub to: UserId,
}

/// A tag was added to the lead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadTagAdded {
    pub tag: String,
}

/// A tag was removed from the lead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadTagRemoved {
    pub tag: String,
}

/// A note was added to the lead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadNoteAdded {
    pub note_id: NoteId,
    pub body: String,
}

/// A follow-up task was created on the lead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadTaskCreated {
    pub task_id: TaskId,
    pub title: String,
    pub due_at: DateTime<Utc>,
}

/// A task on the lead was completed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadTaskCompleted {
    pub task_id: TaskId,
}

/// A call, email or text with the lead was logged (schema version 2; version 1 said
/// `kind` for the channel and `outbound: bool` for the direction).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadCommunicationLogged {
    pub communication_id: CommunicationId,
    pub channel: Channel,
    pub direction: Direction,
    pub summary: String,
}

/// The lead was archived: it leaves the Lead Manager, its history stays.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LeadArchived {}

/// The lead's personal data was erased (a right to be forgotten): its key was
/// destroyed in the same transaction, so its personal values in every event read
/// as erased from now on (see the `vault` module). Carries no personal data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadErased {
    pub reason: String,
}
