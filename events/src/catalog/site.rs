//! Events of a site's stream.

use serde::{Deserialize, Serialize};

use crate::envelope::FieldChange;

/// A site (brokerage) was created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteCreated {
    pub name: String,
}

/// Site settings changed (impersonation switches and limits), field by field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteSettingsChanged {
    pub changes: Vec<FieldChange>,
}
