//! # crm
//!
//! An event-sourced CRM core whose "Log in as user" is trustworthy: every action,
//! impersonation start and end included, is an immutable event tagged with the
//! actor (the human who acted) and the subject (the account acted as).
//!
//! # Layout
//!
//! - `events/` (crate `crm-events`): the event envelope, every event type, schema
//!   versions and upcasting, the append-only, hash-chained event store on SQLite and
//!   PostgreSQL.
//! - `projections/` (crate `crm-projections`): the read side folded from the log.
//! - `migrations/`: the application's tables (credentials, sessions, kept answers)
//!   for each backend; the log's and the projections' are their crates' own
//!   (`events/migrations`, `projections/migrations`). All are embedded and applied
//!   at start-up ([`app::migrate`]).
//! - [`domain`]: validated values, the authorization policy and the pure decisions
//!   of each aggregate.
//! - [`app`]: sessions and the command service (load, authorize, decide, append).
//! - [`http`]: the HTTP API (axum), one module per resource, and its OpenAPI document.
//! - The `crm` binary (`src/main.rs`): the command line, the demo site of
//!   `crm serve --demo` and `crm bench`, the core measured against its database's
//!   best; none of them is part of this library.
//!
//! Dependencies point one way: this crate -> projections -> events.

pub mod app;
pub mod domain;
pub mod export;
pub mod http;
