//! The domain: validated values, the authorization policy, and the pure decisions
//! of each aggregate (state + command -> events with field-level diffs, or a
//! rejection). Nothing here does I/O.
//!
//! - [`values`]: names, emails, phones, tags, due dates, ... parsed once at the edge.
//! - [`policy`]: who may do what, who may log in as whom, which leads one sees.
//! - [`lead`]: the lead aggregate and the Lead Manager's decisions.
//! - [`settings`]: a user's settings keys, communication tools and templates.
//! - [`site`], [`user`], [`impersonation`]: sites and their impersonation settings,
//!   accounts and roles, "Log in as user" sessions.

pub mod impersonation;
pub mod lead;
pub mod policy;
pub mod revert;
pub mod settings;
pub mod site;
pub mod user;
pub mod values;
