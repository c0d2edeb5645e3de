//! Events of a user account's stream. Credentials never appear here: the log records
//! that a password changed, never what to.

use serde::{Deserialize, Serialize};

use super::values::Role;

/// A user account was created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserCreated {
    pub name: String,
    pub email: String,
    pub role: Role,
}

/// A user's role changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRoleChanged {
    pub from: Role,
    pub to: Role,
}

/// A user's sign-in email changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserEmailChanged {
    pub from: String,
    pub to: String,
}

/// A user was deactivated: they can no longer sign in, nor be logged in as.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserDeactivated {}

/// A deactivated user was reactivated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserReactivated {}

/// A user's password changed. Deliberately empty: no secret enters the log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserPasswordChanged {}

/// A user signed in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserLoggedIn {}

/// A user read their notifications, up to and including the one recorded at
/// `up_to_position`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NotificationsRead {
    pub up_to_position: i64,
}

/// A user signed out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserLoggedOut {}
