//! Policies: one file per concern. Each has a compiled form built once at load and small
//! functions that take a request view and return a decision or edit a header map.

pub mod access;
pub mod api_key;
pub mod body;
pub mod cors;
pub mod forwarded;
pub mod headers;
pub mod hygiene;
pub mod in_flight;
pub mod lockout;
pub mod rate_limit;
pub mod schema;
pub mod statics;
pub mod webhook;
