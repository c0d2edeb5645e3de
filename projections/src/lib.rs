//! # crm-projections
//!
//! The read side: pure folds of the event log of [`crm_events`] into tables of their
//! own, which web frontends, admins and compliance read. Nothing else writes these
//! tables; nothing reads the log to answer a page but [`past`], whose pages are the
//! projections as they were at a past position, folded from the log.
//!
//! # Layout
//!
//! - [`projection`]: the [`Projection`] abstraction (name, version, the events it
//!   reads, its tables, `apply` inside a transaction).
//! - [`runner`]: the [`Projector`]: folds in transactions that move the
//!   checkpoints with the rows, settles before every read, catches up, rebuilds
//!   (with [`indexes`] set aside), stops a projection that cannot fold;
//!   `follower`: its task, which folds this process's appends in runs as it
//!   hears of them.
//! - One module per projection, with its fold and its queries: [`users`],
//!   [`lead_manager`], [`settings`], [`notifications`], [`audit_trail`].
//! - [`past`]: a user's Lead Manager, a lead and settings at a past position.
//! - [`query`]: pages, cursors and the query builder the list queries share.
//! - [`SCHEMA`]: this crate's tables, applied when a [`Projector`] opens.

pub mod audit_trail;
mod fold;
mod follower;
mod indexes;
pub mod lead_manager;
pub mod notifications;
pub mod past;
pub mod projection;
pub mod query;
pub mod runner;
pub mod settings;
mod sql;
pub mod users;

use std::sync::Arc;

pub use projection::{Decoded, Projection};
pub use query::{Page, QueryError};
pub use runner::{Checkpoint, ProjectionStatus, Projector, Stopped};

/// The projections' tables (checkpoints, indexes set aside by a rebuild, and
/// every read model), migrated by this crate.
pub static SCHEMA: crm_events::schema::Schema = crm_events::schema::Schema {
    owner: "projections",
    sqlite: &SQLITE,
    postgres: &POSTGRES,
};

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate::Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("migrations/sqlite")
};
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate::Migrator {
    ignore_missing: true,
    ..sqlx::migrate!("migrations/postgres")
};

/// Every projection, in folding order.
#[must_use]
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(users::Users),
        Arc::new(lead_manager::LeadManager::default()),
        Arc::new(settings::SettingsProjection),
        Arc::new(notifications::Notifications),
        Arc::new(audit_trail::AuditTrail),
    ]
}
