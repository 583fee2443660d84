//! Compiles a parsed [`Config`] into the [`Runtime`] that serves requests: addresses parsed,
//! routes sorted and resolved to their pools, header values built, certificates loaded. The
//! runtime is immutable; a reload builds a new one and swaps it in whole.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::diagnostics::Diagnostics;
use crate::config::{Config, KeyPath, RouteConfig};
use crate::log::LogName;
use crate::metrics::RouteSeries;
use crate::policy::access::IpRules;
use crate::policy::access::MethodSet;
use crate::policy::api_key::ApiKeyPolicy;
use crate::policy::body::ContentTypes;
use crate::policy::cors::CorsPolicy;
use crate::policy::forwarded::TrustedProxies;
use crate::policy::headers::name_set::{NameSet, UpstreamDrop};
use crate::policy::headers::{self, FixedHeaders, HeaderPolicy};
use crate::policy::hygiene::HeadLimits;
use crate::policy::in_flight::InFlightTable;
use crate::policy::lockout::{LockoutPolicy, LockoutTable};
use crate::policy::rate_limit::{self, RateLimitPolicy, SharedStore};
use crate::policy::schema::BodySchema;
use crate::policy::statics::Statics;
use crate::policy::webhook::WebhookPolicy;
use crate::router::{normalize_prefix, HostMatch, Matchable, Router};
use crate::state::State;
use crate::tls::CertStore;
use crate::upstream::Pool;

/// The most `[server] upstream_keepalive` allows: idle upstream connections per thread.
const MAX_UPSTREAM_KEEPALIVE: usize = 65_536;

pub struct Route {
    /// The configured name: the metrics label.
    pub name: String,
    /// The name as the access log writes it.
    pub log_name: LogName,
    host: HostMatch,
    prefix: String,
    pub methods: Option<MethodSet>,
    pub upstream: Arc<Pool>,
    /// `None` when the route opted out with `headers = "none"`.
    pub headers: Option<Arc<HeaderPolicy>>,
    /// Limits checked before `auth` (per IP, global, ...).
    pub rate_limits: Vec<Arc<RateLimitPolicy>>,
    /// Limits keyed on the API key, checked after `auth` accepted one.
    pub identity_rate_limits: Vec<Arc<RateLimitPolicy>>,
    pub auth: Option<RouteAuth>,
    pub webhook: Option<Arc<WebhookPolicy>>,
    /// `RateLimit-Policy` for allowed responses, built once.
    pub rate_limit_policy: Option<FixedHeaders>,
    /// The fields of an upstream's response dropped as Pingora parses it: the ones
    /// `finish_response` would otherwise find and remove (`ProxyHttp::upstream_response_drop`).
    pub upstream_drop: UpstreamDrop,
    pub lockout: Option<Arc<LockoutPolicy>>,
    pub cors: Option<Arc<CorsPolicy>>,
    pub ip_rules: Option<IpRules>,
    /// Request body limit in bytes.
    pub max_body: u64,
    pub content_types: Option<ContentTypes>,
    pub schema: Option<Arc<BodySchema>>,
    /// `max_in_flight` and the counts it is checked against.
    pub in_flight: Option<(u32, Arc<InFlightTable>)>,
    /// The route's request metrics, resolved on first use.
    pub series: RouteSeries,
}

/// A route's `auth`: the key policy and the roles a key needs (any one of them).
pub struct RouteAuth {
    pub policy: Arc<ApiKeyPolicy>,
    pub roles: Vec<String>,
}

impl Route {
    /// The path prefix the route matches.
    pub fn prefix_str(&self) -> &str {
        &self.prefix
    }
}

impl Matchable for Route {
    fn host(&self) -> &HostMatch {
        &self.host
    }
    fn prefix(&self) -> &str {
        &self.prefix
    }
}

pub struct Listeners {
    pub plain: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    pub admin: SocketAddr,
}

pub struct Timeouts {
    pub header_read: Duration,
    pub body_read: Duration,
    pub idle: Duration,
}

pub struct Runtime {
    pub router: Router<Route>,
    /// The response policy for requests no route matched, and the default for routes.
    pub default_headers: Option<Arc<HeaderPolicy>>,
    /// CORS for requests no route matched (the defaults').
    pub default_cors: Option<Arc<CorsPolicy>>,
    pub statics: Statics,
    /// Every rate-limit policy, for the metrics.
    pub rate_limits: BTreeMap<String, Arc<RateLimitPolicy>>,
    pub upstreams: BTreeMap<String, Arc<Pool>>,
    pub api_keys: BTreeMap<String, Arc<ApiKeyPolicy>>,
    pub trusted_proxies: TrustedProxies,
    /// `Some(port)` when plain HTTP is redirected to HTTPS on that port.
    pub redirect_https: Option<u16>,
    pub listeners: Listeners,
    pub timeouts: Timeouts,
    pub tls: Option<Arc<CertStore>>,
    pub threads: usize,
    /// Idle upstream connections kept per thread (Pingora's pool, restart to change).
    pub upstream_keepalive: usize,
    pub shutdown_grace: Duration,
    pub head_limits: HeadLimits,
    pub max_connections_per_ip: u32,
    pub max_requests_per_connection: u32,
}

impl Runtime {
    /// Compiles `config`. Every problem goes into `diags`; `None` when there was any error.
    pub fn compile(
        config: &Config,
        base: &Path,
        state: &State,
        diags: &mut Diagnostics,
    ) -> Option<Runtime> {
        let root = KeyPath::root();
        let server_path = root.key("server");
        let server = &config.server;

        let plain = socket_addrs(&server.listen, &server_path.key("listen"), diags);
        let tls_addrs = socket_addrs(&server.tls_listen, &server_path.key("tls_listen"), diags);
        let admin = match config.admin.listen.parse::<SocketAddr>() {
            Ok(addr) => {
                if !addr.ip().is_loopback() {
                    diags.warn(
                        root.key("admin").key("listen"),
                        format!("`{addr}` is not a loopback address: /metrics and /readyz will be reachable from the network"),
                    );
                }
                Some(addr)
            }
            Err(_) => {
                diags.error(
                    root.key("admin").key("listen"),
                    format!(
                        "`{}` is not an address like \"127.0.0.1:9901\"",
                        config.admin.listen
                    ),
                );
                None
            }
        };
        check_unique_addrs(&plain, &tls_addrs, admin, &server_path, diags);
        if server.listen.is_empty() && server.tls_listen.is_empty() {
            diags.error(
                server_path.key("listen"),
                "no listener: set `listen` or `tls_listen`",
            );
        }

        let tls = match (&config.tls, tls_addrs.is_empty()) {
            (Some(tls_cfg), _) => {
                CertStore::compile(tls_cfg, &root.key("tls"), base, diags).map(Arc::new)
            }
            (None, false) => {
                diags.error(
                    server_path.key("tls_listen"),
                    "HTTPS listeners need a [tls] section with a certificate",
                );
                None
            }
            (None, true) => None,
        };
        let redirect_https = match (server.redirect_https, tls_addrs.first()) {
            (Some(true), None) => {
                diags.error(
                    server_path.key("redirect_https"),
                    "needs an HTTPS listener in `tls_listen` to redirect to",
                );
                None
            }
            (Some(false), _) | (None, None) => None,
            (Some(true), Some(addr)) | (None, Some(addr)) => Some(addr.port()),
        };
        let trusted_proxies = TrustedProxies::compile(
            &server.trusted_proxies,
            &server_path.key("trusted_proxies"),
            diags,
        );
        if server.max_connections_per_ip == 0 {
            diags.error(
                server_path.key("max_connections_per_ip"),
                "must be at least 1",
            );
        }
        if server.max_requests_per_connection == 0 {
            diags.error(
                server_path.key("max_requests_per_connection"),
                "must be at least 1",
            );
        }
        if server.timeouts.header_read.0 < Duration::from_secs(1) {
            diags.error(
                server_path.key("timeouts").key("header_read"),
                "must be at least 1s: every request head has to arrive within it",
            );
        }
        if server.instances == 0 {
            diags.error(server_path.key("instances"), "must be at least 1");
        }
        if server.threads == Some(0) {
            diags.error(server_path.key("threads"), "must be at least 1");
        }
        if server.upstream_keepalive == 0 {
            diags.error(
                server_path.key("upstream_keepalive"),
                "must be at least 1: it is how many idle upstream connections each thread keeps",
            );
        } else if server.upstream_keepalive > MAX_UPSTREAM_KEEPALIVE {
            // Pingora sizes its pool's map by it at start.
            diags.error(
                server_path.key("upstream_keepalive"),
                format!(
                    "must be at most {MAX_UPSTREAM_KEEPALIVE}: each idle connection holds a socket"
                ),
            );
        }

        let mut upstreams = BTreeMap::new();
        for (name, up) in &config.upstreams {
            if let Some(pool) = Pool::compile(
                name,
                up,
                &root.key("upstreams").key(name),
                base,
                &state.health,
                diags,
            ) {
                upstreams.insert(name.clone(), Arc::new(pool));
            }
        }

        let header_policies = headers::compile_all(&config.headers, diags);
        let default_headers = resolve_headers(
            config.defaults.headers.as_deref().unwrap_or("baseline"),
            &root.key("defaults").key("headers"),
            &header_policies,
            diags,
        )
        .flatten();
        let redis = config
            .redis
            .as_ref()
            .and_then(|r| SharedStore::compile(r, base, diags));
        let mut rate_limits = BTreeMap::new();
        for (name, cfg) in &config.rate_limits {
            if let Some(p) =
                RateLimitPolicy::compile(name, cfg, redis.as_ref(), &state.limiters, diags)
            {
                rate_limits.insert(name.clone(), Arc::new(p));
            }
        }
        let default_rate_limits = rate_limit::resolve(
            config.defaults.rate_limits.as_deref().unwrap_or_default(),
            &root.key("defaults").key("rate_limits"),
            &rate_limits,
            diags,
        );
        let mut lockouts = BTreeMap::new();
        for (name, cfg) in &config.lockouts {
            let table = |definition, max_keys| {
                state
                    .lockouts
                    .get(name, definition, || LockoutTable::new(max_keys))
            };
            if let Some(p) = LockoutPolicy::compile(name, cfg, table, diags) {
                lockouts.insert(name.clone(), Arc::new(p));
            }
        }
        let mut cors = BTreeMap::new();
        for (name, cfg) in &config.cors {
            if name == "none" {
                diags.error(
                    root.key("cors").key(name),
                    "`none` is reserved for opting out",
                );
            } else if let Some(p) = CorsPolicy::compile(name, cfg, diags) {
                cors.insert(name.clone(), Arc::new(p));
            }
        }
        let default_cors = config.defaults.cors.as_deref().and_then(|name| {
            resolve_named(
                name,
                &root.key("defaults").key("cors"),
                "CORS policy",
                &cors,
                &config.cors,
                diags,
            )
        });
        let mut api_keys = BTreeMap::new();
        for (name, cfg) in &config.api_keys {
            if let Some(p) = ApiKeyPolicy::compile(name, cfg, base, diags) {
                api_keys.insert(name.clone(), Arc::new(p));
            }
        }
        let policies = Policies {
            state,
            api_keys: &api_keys,
            base,
            cors: &cors,
            default_cors: &default_cors,
            max_body: server.max_body.0,
            lockouts: &lockouts,
            upstreams: &upstreams,
            headers: &header_policies,
            default_headers: &default_headers,
            rate_limits: &rate_limits,
            default_rate_limits: &default_rate_limits,
        };
        let routes = compile_routes(config, &policies, diags);
        let statics = Statics::compile(&config.statics, diags);
        if config.routes.is_empty() {
            diags.warn(
                root.key("routes"),
                "no [[routes]]: every request will get 404",
            );
        }

        if diags.has_errors() {
            return None;
        }
        Some(Runtime {
            router: Router::new(routes),
            default_headers,
            default_cors,
            statics,
            rate_limits,
            upstreams,
            api_keys,
            trusted_proxies,
            redirect_https,
            listeners: Listeners {
                plain,
                tls: tls_addrs,
                admin: admin?,
            },
            timeouts: Timeouts {
                header_read: server.timeouts.header_read.0,
                body_read: server.timeouts.body_read.0,
                idle: server.timeouts.idle.0,
            },
            tls,
            threads: server
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            upstream_keepalive: server.upstream_keepalive,
            shutdown_grace: server.shutdown_grace.0,
            max_connections_per_ip: server.max_connections_per_ip,
            max_requests_per_connection: server.max_requests_per_connection,
            head_limits: HeadLimits {
                max_uri_bytes: server.max_uri_bytes.0,
                max_header_bytes: server.max_header_bytes.0,
                max_headers: server.max_headers,
            },
        })
    }

    pub fn summary(&self) -> String {
        format!(
            "{} route(s), {} upstream(s), {} listener(s)",
            self.router.iter().count(),
            self.upstreams.len(),
            self.listeners.plain.len() + self.listeners.tls.len()
        )
    }
}

/// The compiled policies routes refer to by name.
struct Policies<'a> {
    state: &'a State,
    api_keys: &'a BTreeMap<String, Arc<ApiKeyPolicy>>,
    base: &'a Path,
    cors: &'a BTreeMap<String, Arc<CorsPolicy>>,
    default_cors: &'a Option<Arc<CorsPolicy>>,
    max_body: u64,
    lockouts: &'a BTreeMap<String, Arc<LockoutPolicy>>,
    upstreams: &'a BTreeMap<String, Arc<Pool>>,
    headers: &'a BTreeMap<String, Arc<HeaderPolicy>>,
    default_headers: &'a Option<Arc<HeaderPolicy>>,
    rate_limits: &'a BTreeMap<String, Arc<RateLimitPolicy>>,
    default_rate_limits: &'a [Arc<RateLimitPolicy>],
}

/// Resolves a header policy name: `Some(None)` for `"none"`, `None` (and an error) when unknown.
fn resolve_headers(
    name: &str,
    path: &KeyPath,
    policies: &BTreeMap<String, Arc<HeaderPolicy>>,
    diags: &mut Diagnostics,
) -> Option<Option<Arc<HeaderPolicy>>> {
    if name == "none" {
        return Some(None);
    }
    match policies.get(name) {
        Some(p) => Some(Some(p.clone())),
        None => {
            let known: Vec<&str> = policies.keys().map(String::as_str).collect();
            diags.error(
                path.clone(),
                format!(
                    "unknown header policy `{name}`; defined: {}, or \"none\"",
                    known.join(", ")
                ),
            );
            None
        }
    }
}

fn compile_routes(
    config: &Config,
    policies: &Policies<'_>,
    diags: &mut Diagnostics,
) -> Vec<Arc<Route>> {
    let routes_path = KeyPath::root().key("routes");
    let mut names = HashSet::new();
    let mut places: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, rc) in config.routes.iter().enumerate() {
        let path = routes_path.index(i);
        if !names.insert(rc.name.as_str()) {
            diags.error(
                path.key("name"),
                format!(
                    "route name `{}` is used twice; names must be unique",
                    rc.name
                ),
            );
        }
        if let Some(route) = compile_route(rc, &path, config, policies, diags) {
            let place = (format!("{:?}", route.host), route.prefix.clone());
            if let Some(first) = places.insert(place, route.name.clone()) {
                diags.error(
                    path.key("path"),
                    format!("routes `{first}` and `{}` match the same host and path; one of them could never be reached", route.name),
                );
            }
            out.push(Arc::new(route));
        }
    }
    out
}

/// A name that becomes a metrics label and appears in logs and `/readyz`: 1-64 letters,
/// digits, `_` or `-`, so it reads the same everywhere and a key path naming it is unambiguous.
pub(crate) fn is_label_name(name: &str) -> bool {
    name.len() <= 64 && crate::config::diagnostics::is_bare_key(name)
}

fn compile_route(
    rc: &RouteConfig,
    path: &KeyPath,
    config: &Config,
    policies: &Policies<'_>,
    diags: &mut Diagnostics,
) -> Option<Route> {
    let errors_before = diags.error_count();
    if !is_label_name(&rc.name) {
        diags.error(
            path.key("name"),
            format!(
                "`{}` must be 1-64 letters, digits, `_` or `-` (it is a metrics label)",
                rc.name
            ),
        );
    }
    let host = match rc.host.as_deref().map(HostMatch::parse) {
        None => HostMatch::Any,
        Some(Ok(h)) => h,
        Some(Err(e)) => {
            diags.error(path.key("host"), e);
            HostMatch::Any
        }
    };
    let prefix = normalize_prefix(&rc.path).unwrap_or_else(|e| {
        diags.error(path.key("path"), e);
        String::new()
    });
    let methods = rc
        .methods
        .as_ref()
        .and_then(|list| MethodSet::compile(list, &path.key("methods"), diags));
    let headers = match &rc.headers {
        None => Some(policies.default_headers.clone()),
        Some(name) => resolve_headers(name, &path.key("headers"), policies.headers, diags),
    };
    let rate_limits = match &rc.rate_limits {
        None => policies.default_rate_limits.to_vec(),
        Some(names) => {
            rate_limit::resolve(names, &path.key("rate_limits"), policies.rate_limits, diags)
        }
    };
    let lockout = rc.lockout.as_deref().and_then(|name| {
        resolve_named(
            name,
            &path.key("lockout"),
            "lockout",
            policies.lockouts,
            &config.lockouts,
            diags,
        )
    });
    if rc.max_in_flight == Some(0) {
        diags.error(
            path.key("max_in_flight"),
            "must be at least 1; leave it out for no cap",
        );
    }
    let in_flight = rc.max_in_flight.filter(|n| *n > 0).map(|max| {
        let table = policies
            .state
            .in_flight
            .get(&rc.name, String::new(), InFlightTable::default);
        (max, table)
    });
    let cors = match rc.cors.as_deref() {
        None => policies.default_cors.clone(),
        Some("none") => None,
        Some(name) => resolve_named(
            name,
            &path.key("cors"),
            "CORS policy",
            policies.cors,
            &config.cors,
            diags,
        ),
    };
    let auth = rc.auth.as_ref().and_then(|a| {
        let policy = resolve_named(
            &a.api_keys,
            &path.key("auth").key("api_keys"),
            "API key policy",
            policies.api_keys,
            &config.api_keys,
            diags,
        )?;
        Some(RouteAuth {
            policy,
            roles: a.roles.clone(),
        })
    });
    let (identity_rate_limits, rate_limits): (Vec<_>, Vec<_>) =
        rate_limits.into_iter().partition(|p| p.needs_identity());
    if let (Some(first), None) = (identity_rate_limits.first(), &rc.auth) {
        let at = if rc.rate_limits.is_some() {
            path.key("rate_limits")
        } else {
            KeyPath::root().key("defaults").key("rate_limits")
        };
        diags.error(
            at,
            format!(
                "`{}` counts per API key, but route `{}` has no `auth` to know the key",
                first.name, rc.name
            ),
        );
    }
    let webhook = rc
        .webhook
        .as_ref()
        .and_then(|w| WebhookPolicy::compile(w, policies.base, &path.key("webhook"), diags))
        .map(Arc::new);
    let ip_rules = IpRules::compile(&rc.allow_ips, &rc.deny_ips, path, diags);
    let content_types = rc
        .content_types
        .as_ref()
        .and_then(|list| ContentTypes::compile(list, &path.key("content_types"), diags));
    let schema = rc
        .schema
        .as_ref()
        .and_then(|file| BodySchema::compile(file, policies.base, &path.key("schema"), diags))
        .map(Arc::new);
    let upstream = policies.upstreams.get(&rc.upstream).cloned();
    if upstream.is_none() && !config.upstreams.contains_key(&rc.upstream) {
        let known: Vec<&str> = config.upstreams.keys().map(String::as_str).collect();
        diags.error(
            path.key("upstream"),
            format!(
                "unknown upstream `{}`; defined: {}",
                rc.upstream,
                list_or_none(&known)
            ),
        );
    }
    if diags.error_count() > errors_before {
        return None;
    }
    let headers = headers?;
    let rate_limit_policy = rate_limit::policy_header(
        &[rate_limits.as_slice(), identity_rate_limits.as_slice()].concat(),
    )
    .map(|v| FixedHeaders::new([(crate::respond::RATELIMIT_POLICY_NAME, v)]));
    // What `finish_response` would remove from an upstream's response, dropped as it is
    // parsed instead: the policy's strip set, the names the gateway sets in their place, and
    // the app's own `Access-Control-*` where the route answers CORS itself. `Date` too:
    // Pingora writes its own on every response (the vendored pingora-core's patch 23).
    let gateways = [crate::respond::X_REQUEST_ID, http::header::DATE]
        .into_iter()
        .chain(
            rate_limit_policy
                .is_some()
                .then_some([
                    crate::respond::RATELIMIT_NAME,
                    crate::respond::RATELIMIT_POLICY_NAME,
                ])
                .into_iter()
                .flatten(),
        );
    let cors_names = cors.is_some().then_some(CorsPolicy::OWN_PREFIX);
    let upstream_drop = match &headers {
        Some(policy) => policy.strip().with(gateways, cors_names),
        None => NameSet::new(gateways, cors_names),
    }
    .into_drop();
    Some(Route {
        name: rc.name.clone(),
        log_name: LogName::new(&rc.name),
        host,
        prefix,
        methods,
        upstream: upstream?,
        headers,
        rate_limit_policy,
        upstream_drop,
        rate_limits,
        identity_rate_limits,
        auth,
        webhook,
        lockout,
        in_flight,
        cors,
        ip_rules,
        max_body: rc.max_body.map_or(policies.max_body, |b| b.0),
        content_types,
        schema,
        series: RouteSeries::default(),
    })
}

/// Looks up a named policy; unknown names are errors (unless the policy exists but failed to
/// compile, which was reported already).
fn resolve_named<T, C>(
    name: &str,
    path: &KeyPath,
    what: &str,
    compiled: &BTreeMap<String, Arc<T>>,
    written: &BTreeMap<String, C>,
    diags: &mut Diagnostics,
) -> Option<Arc<T>> {
    let found = compiled.get(name).cloned();
    if found.is_none() && !written.contains_key(name) {
        let known: Vec<&str> = written.keys().map(String::as_str).collect();
        diags.error(
            path.clone(),
            format!("unknown {what} `{name}`; defined: {}", list_or_none(&known)),
        );
    }
    found
}

pub fn list_or_none(names: &[&str]) -> String {
    if names.is_empty() {
        "(none)".to_string()
    } else {
        names.join(", ")
    }
}

fn socket_addrs(list: &[String], path: &KeyPath, diags: &mut Diagnostics) -> Vec<SocketAddr> {
    list.iter()
        .enumerate()
        .filter_map(|(i, text)| match text.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                diags.error(
                    path.index(i),
                    format!("`{text}` is not an address like \"0.0.0.0:8080\" or \"[::]:8443\""),
                );
                None
            }
        })
        .collect()
}

fn check_unique_addrs(
    plain: &[SocketAddr],
    tls: &[SocketAddr],
    admin: Option<SocketAddr>,
    path: &KeyPath,
    diags: &mut Diagnostics,
) {
    let mut seen = HashSet::new();
    let all = plain
        .iter()
        .map(|a| (a, "listen"))
        .chain(tls.iter().map(|a| (a, "tls_listen")))
        .chain(admin.iter().map(|a| (a, "admin")));
    for (addr, key) in all {
        if !seen.insert(*addr) {
            let at = if key == "admin" {
                KeyPath::root().key("admin").key("listen")
            } else {
                path.key(key)
            };
            diags.error(at, format!("`{addr}` is used by two listeners"));
        }
    }
}
