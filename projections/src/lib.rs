//! # crm-projections
//!
//! The read side: projections folded from the event log of [`crm_events`] into
//! tables of their own (lead manager, settings, users, notifications, audit trail),
//! each with a checkpoint committed in the same transaction as its rows.
//!
//! This crate depends only on `crm-events`; nothing here writes events.

pub use crm_events;
