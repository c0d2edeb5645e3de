//! Typed identifiers, so a `UserId` can never be passed where a `LeadId` is meant.
//!
//! Every id is a UUID; new ones are version 7 (time-ordered), which keeps the
//! database's indexes on ids append-mostly.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($($(#[$meta:meta])* $name:ident;)*) => {$(
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered (UUID v7) id.
            #[must_use]
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an existing UUID, e.g. one read back from the database.
            #[must_use]
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The underlying UUID.
            #[must_use]
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Uuid {
                id.0
            }
        }
    )*};
}

uuid_id! {
    /// A site (one brokerage): the unit of tenancy. Nothing crosses sites.
    SiteId;
    /// A user account of a site.
    UserId;
    /// A lead in the Lead Manager.
    LeadId;
    /// One "Log in as user" session, from start to end.
    ImpersonationId;
    /// An email or text template of a user.
    TemplateId;
    /// A note on a lead.
    NoteId;
    /// A task on a lead.
    TaskId;
    /// A logged call, email or text with a lead.
    CommunicationId;
    /// One stored event.
    EventId;
    /// One request: every event appended while serving it shares this id.
    CorrelationId;
}

impl UserId {
    /// The actor of actions that no human took, such as creating a site from the
    /// command line. It is the nil UUID, which `generate` never returns.
    pub const SYSTEM: UserId = UserId(Uuid::nil());
}
