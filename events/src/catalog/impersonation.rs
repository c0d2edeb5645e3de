//! Events of an impersonation ("Log in as user") session: its stream's start and
//! end, and the leads it opened (its views stream).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::values::{EndReason, ImpersonationMode};
use crate::ids::{LeadId, UserId};

/// An owner or admin started acting as an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImpersonationStarted {
    pub admin_id: UserId,
    pub subject_id: UserId,
    /// Why; `None` only when the site does not require a reason.
    pub reason: Option<String>,
    pub expires_at: DateTime<Utc>,
    /// `view`: every write of the session is refused. Absent from sessions recorded
    /// before there were modes, which could edit.
    #[serde(default)]
    pub mode: ImpersonationMode,
}

/// While logged in as someone, the admin opened a lead's detail: a session shows
/// what was seen, not only what changed. Carries no personal data. On the
/// session's views stream (the session's id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadViewed {
    pub lead_id: LeadId,
}

/// An owner or admin reverted what the session changed (after it ended), with a
/// reason: the changes put back are ordinary events of the agent's account, caused
/// by the session (their `causation_id`); this one sums the decision up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImpersonationReverted {
    pub reason: String,
    /// Changes put back.
    pub reverted: u32,
    /// Changes changed since, left alone.
    pub conflicts: u32,
    /// Changes the domain has no inverse for.
    pub not_revertible: u32,
}

/// The session ended. For an expired session `ended_at` is its expiry time, which can
/// be earlier than when the end was recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImpersonationEnded {
    pub end_reason: EndReason,
    pub ended_at: DateTime<Utc>,
}
