//! The TOML schema, section by section. Every table rejects unknown keys; every key says its
//! default. These types are what was written; `runtime` compiles them into what is served.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::secret::SecretRef;
use super::units::{ByteSize, HumanDuration};
pub use crate::policy::api_key::{ApiKeysConfig, AuthConfig};
pub use crate::policy::cors::CorsConfig;
pub use crate::policy::headers::HeadersConfig;
pub use crate::policy::lockout::LockoutConfig;
pub use crate::policy::rate_limit::{RateLimitConfig, RedisConfig};
pub use crate::policy::statics::StaticConfig;
pub use crate::policy::webhook::WebhookConfig;

/// `[server]`: listeners and proxy-wide behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Plain HTTP listeners. Default `["0.0.0.0:8080"]`.
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// HTTPS listeners; they need `[tls]`. Default none.
    #[serde(default)]
    pub tls_listen: Vec<String>,
    /// Plain HTTP answers 308 to the https URL. Default: true when `tls_listen` is set.
    pub redirect_https: Option<bool>,
    /// Peers whose `X-Forwarded-For` and `X-Request-Id` are believed (CIDRs). Default none.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// The default request body limit. Default `"1MiB"`.
    #[serde(default = "default_max_body")]
    pub max_body: ByteSize,
    /// Total size of a request's header fields (431 over it). Default `"16KiB"`.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: ByteSize,
    /// Open client connections per IP (trusted proxies exempt); more are closed at once.
    /// Default 256.
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: u32,
    /// Requests served on one keep-alive connection before it is closed. Default 1000.
    #[serde(default = "default_max_requests_per_connection")]
    pub max_requests_per_connection: u32,
    /// Number of request header fields (431 over it). Default 100.
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
    /// Length of the request target, path and query (414 over it). Default `"8KiB"`.
    #[serde(default = "default_max_uri_bytes")]
    pub max_uri_bytes: ByteSize,
    /// Worker threads. Default: the number of cores.
    pub threads: Option<usize>,
    /// Idle upstream keep-alive connections kept per thread, across all upstreams; beyond it
    /// the least recently used is closed. Default 1024.
    #[serde(default = "default_upstream_keepalive")]
    pub upstream_keepalive: usize,
    /// How many Palisade instances share the traffic. Only `palisade audit` reads it: local
    /// rate limits on several instances allow that many times their limit. Default 1.
    #[serde(default = "default_instances")]
    pub instances: u32,
    /// How long SIGTERM waits for in-flight requests to finish. Default `"30s"`.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: HumanDuration,
}

/// `[server.timeouts]`: how long the gateway waits on a client.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// Time allowed to read a whole request head, from the connection's accept (first
    /// request) or the request's first byte (later ones). Default `"10s"`.
    #[serde(default = "default_header_read")]
    pub header_read: HumanDuration,
    /// Time allowed between two reads of a request body. Default `"30s"`.
    #[serde(default = "default_body_read")]
    pub body_read: HumanDuration,
    /// How long an idle keep-alive connection stays open. Default `"60s"`.
    #[serde(default = "default_idle")]
    pub idle: HumanDuration,
}

/// `[admin]`: the admin listener with `/healthz`, `/readyz`, `/metrics`, `/version`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Default `"127.0.0.1:9901"`.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
}

/// `[tls]`: certificates for the HTTPS listeners.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// `"1.2"` or `"1.3"`. Default `"1.2"`.
    #[serde(default = "default_min_version")]
    pub min_version: String,
    /// Chosen by SNI from each certificate's SANs; the first is the default.
    #[serde(default)]
    pub certificates: Vec<CertificateConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM certificate chain, leaf first.
    pub cert: String,
    /// PEM private key: a secret reference.
    pub key: SecretRef,
}

/// `[upstreams.NAME]`: a pool of servers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `host:port` of each server, used round robin. Required.
    pub servers: Vec<String>,
    /// HTTPS to the servers. Default false.
    #[serde(default)]
    pub tls: bool,
    /// SNI and certificate name for TLS. Default: the server's host.
    pub sni: Option<String>,
    /// PEM CA bundle to verify the servers with. Default: the system's roots.
    pub ca_file: Option<String>,
    /// Default `"2s"`.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Time allowed between two reads from a server. Default `"60s"`.
    #[serde(default = "default_read_timeout")]
    pub read_timeout: HumanDuration,
    /// Extra tries on another server after a failed connect, for idempotent methods. Default 1.
    #[serde(default = "default_retries")]
    pub retries: usize,
    #[serde(default)]
    pub passive_health: PassiveHealthConfig,
    pub health_check: Option<HealthCheckConfig>,
}

/// `passive_health`: a server that fails `failures` connects in a row rests for `rest`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassiveHealthConfig {
    /// Default 3.
    #[serde(default = "default_failures")]
    pub failures: u32,
    /// Default `"10s"`.
    #[serde(default = "default_rest")]
    pub rest: HumanDuration,
}

/// `health_check`: active HTTP checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Path requested with GET; any 2xx or 3xx is healthy. Required.
    pub path: String,
    /// Default `"5s"`.
    #[serde(default = "default_check_interval")]
    pub interval: HumanDuration,
    /// Default `"1s"`.
    #[serde(default = "default_check_timeout")]
    pub timeout: HumanDuration,
    /// Consecutive failures that mark a server down. Default 3.
    #[serde(default = "default_unhealthy_after")]
    pub unhealthy_after: u32,
    /// Consecutive successes that bring it back. Default 2.
    #[serde(default = "default_healthy_after")]
    pub healthy_after: u32,
}

/// `[defaults]`: what every route gets unless it says otherwise.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultsConfig {
    /// A `[headers.NAME]` policy, a built-in preset, or `"none"`. Default `"baseline"`.
    pub headers: Option<String>,
    /// `[rate_limits.NAME]` policies every route gets. Default none.
    pub rate_limits: Option<Vec<String>>,
    /// A `[cors.NAME]` policy every route gets. Default none (no CORS headers).
    pub cors: Option<String>,
}

/// `[[routes]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The metrics label; unique; letters, digits, `_` and `-`. Required.
    pub name: String,
    /// Exact host or `*.example.com`. Default: any host.
    pub host: Option<String>,
    /// Path prefix, matched on segment boundaries. Default `"/"`.
    #[serde(default = "default_path")]
    pub path: String,
    /// Allowed methods; others get 405 with `Allow`. Default: any.
    pub methods: Option<Vec<String>>,
    /// The upstream pool. Required.
    pub upstream: String,
    /// A `[headers.NAME]` policy, a built-in preset, or `"none"`. Default: `[defaults]`'.
    pub headers: Option<String>,
    /// `[rate_limits.NAME]` policies; `[]` opts out. Default: `[defaults]`'.
    pub rate_limits: Option<Vec<String>>,
    /// A `[lockouts.NAME]` policy watching this route's answers. Default none.
    pub lockout: Option<String>,
    /// Concurrent requests per client IP on this route; over it answers 429. Default none.
    pub max_in_flight: Option<u32>,
    /// A `[cors.NAME]` policy, or `"none"`. Default: `[defaults]`'.
    pub cors: Option<String>,
    /// Request body limit. Default: `[server] max_body`.
    pub max_body: Option<ByteSize>,
    /// Media types a request body may have; others get 415. Default: any.
    pub content_types: Option<Vec<String>>,
    /// A JSON Schema file (draft 2020-12) request bodies must match; 400 otherwise.
    pub schema: Option<String>,
    /// Only these client IPs or CIDRs (403 otherwise). Default: any.
    #[serde(default)]
    pub allow_ips: Vec<String>,
    /// Never these client IPs or CIDRs (403). Default none.
    #[serde(default)]
    pub deny_ips: Vec<String>,
    /// `{ api_keys = NAME, roles = [...] }`: a valid key (with one of the roles) is required.
    pub auth: Option<AuthConfig>,
    /// The body must carry a valid signature (Stripe or HMAC-SHA256).
    pub webhook: Option<WebhookConfig>,
}

/// The whole file, once each section has parsed.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub tls: Option<TlsConfig>,
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    pub defaults: DefaultsConfig,
    pub headers: BTreeMap<String, HeadersConfig>,
    pub cors: BTreeMap<String, CorsConfig>,
    pub rate_limits: BTreeMap<String, RateLimitConfig>,
    pub lockouts: BTreeMap<String, LockoutConfig>,
    pub api_keys: BTreeMap<String, ApiKeysConfig>,
    pub redis: Option<RedisConfig>,
    pub statics: Vec<StaticConfig>,
    pub routes: Vec<RouteConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            tls_listen: Vec::new(),
            redirect_https: None,
            trusted_proxies: Vec::new(),
            timeouts: TimeoutsConfig::default(),
            max_body: default_max_body(),
            max_header_bytes: default_max_header_bytes(),
            max_headers: default_max_headers(),
            max_connections_per_ip: default_max_connections_per_ip(),
            max_requests_per_connection: default_max_requests_per_connection(),
            max_uri_bytes: default_max_uri_bytes(),
            threads: None,
            upstream_keepalive: default_upstream_keepalive(),
            shutdown_grace: default_shutdown_grace(),
            instances: default_instances(),
        }
    }
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            header_read: default_header_read(),
            body_read: default_body_read(),
            idle: default_idle(),
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_admin_listen(),
        }
    }
}

impl Default for PassiveHealthConfig {
    fn default() -> Self {
        PassiveHealthConfig {
            failures: default_failures(),
            rest: default_rest(),
        }
    }
}

fn default_max_header_bytes() -> ByteSize {
    ByteSize(16 * 1024)
}
fn default_max_connections_per_ip() -> u32 {
    256
}
fn default_max_requests_per_connection() -> u32 {
    1000
}
fn default_max_headers() -> usize {
    100
}
fn default_max_uri_bytes() -> ByteSize {
    ByteSize(8 * 1024)
}
fn default_max_body() -> ByteSize {
    ByteSize(1024 * 1024)
}
fn default_listen() -> Vec<String> {
    vec!["0.0.0.0:8080".to_string()]
}
fn default_shutdown_grace() -> HumanDuration {
    HumanDuration::secs(30)
}
fn default_instances() -> u32 {
    1
}
/// Above the streams a busy thread has in flight at once (a few hundred HTTP/2 streams, each
/// holding its own upstream connection), so a burst's connections are kept for the next one
/// rather than closed and reopened. An idle connection costs a socket and a few KB.
fn default_upstream_keepalive() -> usize {
    1024
}
fn default_header_read() -> HumanDuration {
    HumanDuration::secs(10)
}
fn default_body_read() -> HumanDuration {
    HumanDuration::secs(30)
}
fn default_idle() -> HumanDuration {
    HumanDuration::secs(60)
}
fn default_admin_listen() -> String {
    "127.0.0.1:9901".to_string()
}
fn default_min_version() -> String {
    "1.2".to_string()
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration::secs(2)
}
fn default_read_timeout() -> HumanDuration {
    HumanDuration::secs(60)
}
fn default_retries() -> usize {
    1
}
fn default_failures() -> u32 {
    3
}
fn default_rest() -> HumanDuration {
    HumanDuration::secs(10)
}
fn default_check_interval() -> HumanDuration {
    HumanDuration::secs(5)
}
fn default_check_timeout() -> HumanDuration {
    HumanDuration::secs(1)
}
fn default_unhealthy_after() -> u32 {
    3
}
fn default_healthy_after() -> u32 {
    2
}
fn default_path() -> String {
    "/".to_string()
}
