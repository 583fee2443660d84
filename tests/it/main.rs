//! Integration tests: the real `palisade` binary, a real upstream, real clients over real TLS.
//! One test crate with modules, so the suite links once.

mod admin;
mod auth;
mod cli;
mod config_errors;
mod connections;
mod deploy;
mod examples;
mod forwarding;
mod guards;
mod harness;
mod header_map;
mod headers;
mod rate_limits;
mod reload;
mod request_target;
mod routing;
mod spellings;
mod task_pipe;
mod tls;
mod upgrade;
mod upstreams;
mod verify;
