//! The catalogue of every event type: its name, the kind of stream it belongs on and
//! its current schema version, and [`DomainEvent`], the typed form of all of them.
//!
//! The store refuses to append a type that is not listed here, and decoding reads
//! older schema versions through the upcasters in [`crate::upcast`].

pub mod impersonation;
pub mod lead;
pub mod settings;
pub mod site;
pub mod user;
pub mod values;

use serde_json::Value;

use crate::envelope::{NewEvent, StreamType};
use impersonation::*;
use lead::*;
use settings::*;
use site::*;
use user::*;

/// One entry of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTypeInfo {
    pub name: &'static str,
    pub stream_type: StreamType,
    /// The version new events are written at; older ones are upcast on read.
    pub schema_version: u16,
}

macro_rules! catalog {
    ($($variant:ident: $stream:ident, version $version:literal;)*) => {
        /// Every event type the domain records, in typed form.
        #[derive(Debug, Clone, PartialEq)]
        pub enum DomainEvent {
            $($variant($variant),)*
        }

        /// The catalogue: every event type with its stream type and schema version.
        pub const CATALOG: &[EventTypeInfo] = &[
            $(EventTypeInfo {
                name: stringify!($variant),
                stream_type: StreamType::$stream,
                schema_version: $version,
            },)*
        ];

        impl DomainEvent {
            /// The name stored in the `event_type` column.
            #[must_use]
            pub fn event_type(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => stringify!($variant),)*
                }
            }

            /// The current schema version of this event's type.
            #[must_use]
            pub fn schema_version(&self) -> u16 {
                match self {
                    $(Self::$variant(_) => $version,)*
                }
            }

            /// The kind of stream this event belongs on.
            #[must_use]
            pub fn stream_type(&self) -> StreamType {
                match self {
                    $(Self::$variant(_) => StreamType::$stream,)*
                }
            }

            /// The event ready to append, at its current schema version.
            #[must_use]
            pub fn to_new_event(&self) -> NewEvent {
                let payload = match self {
                    $(Self::$variant(inner) => serde_json::to_string(inner),)*
                };
                NewEvent {
                    event_type: self.event_type().to_owned(),
                    schema_version: self.schema_version(),
                    // Serializing these plain structs to a string cannot fail: they
                    // hold only strings, numbers, ids, dates and JSON values.
                    payload: payload.unwrap_or_else(|_| "{}".to_owned()),
                }
            }

            /// Builds the typed event from a payload already at the current version.
            pub(crate) fn from_current(event_type: &str, payload: Value) -> Result<Self, String> {
                match event_type {
                    $(stringify!($variant) => serde_json::from_value(payload)
                        .map(Self::$variant)
                        .map_err(|e| format!("{} payload does not decode: {e}", stringify!($variant))),)*
                    other => Err(format!("unknown event type {other:?}")),
                }
            }
        }

        $(impl From<$variant> for DomainEvent {
            fn from(event: $variant) -> Self {
                Self::$variant(event)
            }
        })*
    };
}

catalog! {
    SiteCreated: Site, version 1;
    SiteSettingsChanged: Site, version 1;

    UserCreated: User, version 1;
    UserRoleChanged: User, version 1;
    UserEmailChanged: User, version 1;
    UserDeactivated: User, version 1;
    UserReactivated: User, version 1;
    UserPasswordChanged: User, version 1;
    UserLoggedIn: User, version 1;
    UserLoggedOut: User, version 1;
    NotificationsRead: User, version 1;

    ImpersonationStarted: Impersonation, version 1;
    ImpersonationEnded: Impersonation, version 1;
    ImpersonationReverted: Impersonation, version 1;
    LeadViewed: Views, version 1;

    LeadCreated: Lead, version 2;
    LeadFieldsUpdated: Lead, version 1;
    LeadStageChanged: Lead, version 1;
    LeadReassigned: Lead, version 1;
    LeadTagAdded: Lead, version 1;
    LeadTagRemoved: Lead, version 1;
    LeadNoteAdded: Lead, version 1;
    LeadTaskCreated: Lead, version 1;
    LeadTaskCompleted: Lead, version 1;
    LeadCommunicationLogged: Lead, version 2;
    LeadArchived: Lead, version 1;
    LeadErased: Lead, version 1;

    UserSettingsChanged: Settings, version 1;
    TemplateCreated: Settings, version 1;
    TemplateUpdated: Settings, version 1;
    TemplateDeleted: Settings, version 1;
}

/// The catalogue entry for `event_type`, if it is a known type.
#[must_use]
pub fn lookup(event_type: &str) -> Option<&'static EventTypeInfo> {
    CATALOG.iter().find(|info| info.name == event_type)
}
