//! Small value types that events carry: roles, lead stages, channels and the like.
//! They serialize as the snake_case strings the HTTP API shows.

use serde::{Deserialize, Serialize};

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),* }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The value's name as stored and shown.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }

            /// The value named `text`, if any.
            #[must_use]
            pub fn parse(text: &str) -> Option<$name> {
                match text { $($text => Some($name::$variant),)* _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// A user's role within their site.
    Role { Owner => "owner", Admin => "admin", Agent => "agent", Auditor => "auditor" }
}

string_enum! {
    /// Where a lead stands in the pipeline.
    Stage {
        New => "new",
        AttemptedContact => "attempted_contact",
        Contacted => "contacted",
        Nurture => "nurture",
        AppointmentSet => "appointment_set",
        UnderContract => "under_contract",
        Closed => "closed",
        Lost => "lost",
    }
}

string_enum! {
    /// How a communication with a lead happened.
    Channel { Call => "call", Email => "email", Text => "text" }
}

string_enum! {
    /// Who started a communication.
    Direction { Inbound => "inbound", Outbound => "outbound" }
}

string_enum! {
    /// What an impersonation session may do: act as the agent, or only look.
    ImpersonationMode { Edit => "edit", View => "view" }
}

impl Default for ImpersonationMode {
    /// Sessions recorded before there were modes could edit.
    fn default() -> Self {
        Self::Edit
    }
}

string_enum! {
    /// Why an impersonation session ended.
    EndReason {
        Returned => "returned",
        Expired => "expired",
        LoggedOut => "logged_out",
        Revoked => "revoked",
    }
}

string_enum! {
    /// What a template is for.
    TemplateKind { Email => "email", Text => "text" }
}
