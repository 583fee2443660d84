//! Palisade: a security gateway on Pingora. The library behind the `palisade` binary; its
//! modules are public so benchmarks and tests can reach the decision functions.

pub mod admin;
pub mod audit;
pub mod background;
pub mod boxed;
pub mod clock;
pub mod config;
pub mod ctx;
pub mod head_deadline;
pub mod log;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod respond;
pub mod router;
pub mod runtime;
pub mod scan;
pub mod server;
pub mod sharded;
pub mod snapshot;
pub mod stack_str;
pub mod state;
pub mod stdout;
pub mod tls;
pub mod upstream;
pub mod verify;
pub mod version;
