//! Events of a user's settings stream: settings keys (communication tools included)
//! and templates.

use serde::{Deserialize, Serialize};

use super::values::TemplateKind;
use crate::envelope::FieldChange;
use crate::ids::TemplateId;

/// Settings keys changed, key by key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserSettingsChanged {
    pub changes: Vec<FieldChange>,
}

/// An email or text template was created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateCreated {
    pub template_id: TemplateId,
    pub kind: TemplateKind,
    pub name: String,
    pub subject: Option<String>,
    pub body: String,
}

/// A template's name, subject or body changed, field by field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateUpdated {
    pub template_id: TemplateId,
    pub changes: Vec<FieldChange>,
}

/// A template was deleted; the event keeps what it was, so the audit trail can show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateDeleted {
    pub template_id: TemplateId,
    pub kind: TemplateKind,
    pub name: String,
    pub subject: Option<String>,
    pub body: String,
}
