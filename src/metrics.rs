//! The metric registry with typed handles. Every label is bounded: routes by configured name,
//! methods folded to the standard set, statuses to their class, upstreams and servers by name.

use http::Method;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::runtime::Runtime;

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub upstream_errors: IntCounterVec,
    upstream_health: IntGaugeVec,
    pub active_connections: IntGauge,
    pub requests_in_flight: IntGauge,
    pub access_log_dropped: prometheus::IntCounter,
    pub rate_limit_decisions: IntCounterVec,
    pub rate_limit_store_errors: IntCounterVec,
    pub lockouts: IntCounterVec,
    rate_limit_keys: IntGaugeVec,
    rate_limit_evictions: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub requests_rejected: IntCounterVec,
    /// `requests_rejected{route="-"}` for the refusals counted per connection, resolved once.
    pub header_timeouts: prometheus::IntCounter,
    pub bad_heads: prometheus::IntCounter,
    pub api_key_auth: IntCounterVec,
    pub webhook_verifications: IntCounterVec,
    pub connections_rejected: prometheus::IntCounter,
    pub config_last_reload_success: prometheus::Gauge,
    tls_cert_expiry: prometheus::GaugeVec,
}

/// Label used when a request matched no route.
pub const NO_ROUTE: &str = "-";

impl Metrics {
    pub fn new(version: &str, git_sha: &str) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "gateway_requests_total",
                "Requests answered, by route, method and status class.",
            ),
            &["route", "method", "status_class"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "gateway_request_duration_seconds",
                "Time from request to last response byte, by route.",
            ),
            &["route"],
        )?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "gateway_upstream_duration_seconds",
                "Time from choosing an upstream server to its response header, by upstream.",
            ),
            &["upstream"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "gateway_upstream_errors_total",
                "Failures talking to an upstream, by upstream and kind.",
            ),
            &["upstream", "kind"],
        )?;
        let upstream_health = IntGaugeVec::new(
            Opts::new(
                "gateway_upstream_health",
                "1 when an upstream server takes requests, 0 when it is down or resting.",
            ),
            &["upstream", "server"],
        )?;
        let active_connections = IntGauge::new(
            "gateway_active_connections",
            "Client connections open (after any TLS handshake).",
        )?;
        let requests_in_flight =
            IntGauge::new("gateway_requests_in_flight", "Requests being handled now.")?;
        let access_log_dropped = prometheus::IntCounter::new(
            "gateway_access_log_dropped_total",
            "Access log lines dropped because the writer fell behind.",
        )?;
        let rate_limit_decisions = IntCounterVec::new(
            Opts::new(
                "gateway_rate_limit_decisions_total",
                "Rate-limit decisions by policy and result (allowed, limited, missing_key, unavailable).",
            ),
            &["policy", "result"],
        )?;
        let rate_limit_store_errors = IntCounterVec::new(
            Opts::new(
                "gateway_rate_limit_store_errors_total",
                "Decisions the shared store did not answer in time; on_error decided them.",
            ),
            &["store"],
        )?;
        let lockouts = IntCounterVec::new(
            Opts::new(
                "gateway_lockouts_total",
                "Clients blocked by a lockout policy.",
            ),
            &["policy"],
        )?;
        let rate_limit_keys = IntGaugeVec::new(
            Opts::new(
                "gateway_rate_limit_keys",
                "Keys held in a policy's local table.",
            ),
            &["policy"],
        )?;
        let rate_limit_evictions = IntCounterVec::new(
            Opts::new(
                "gateway_rate_limit_evictions_total",
                "Keys evicted from a policy's local table to stay within max_keys.",
            ),
            &["policy"],
        )?;
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "gateway_config_reloads_total",
                "Config reloads (SIGHUP), by result.",
            ),
            &["result"],
        )?;
        let config_last_reload_success = prometheus::Gauge::new(
            "gateway_config_last_reload_success_timestamp_seconds",
            "When the running config was loaded (Unix time).",
        )?;
        let requests_rejected = IntCounterVec::new(
            Opts::new(
                "gateway_requests_rejected_total",
                "Requests the request guards refused, by route and reason.",
            ),
            &["route", "reason"],
        )?;
        let api_key_auth = IntCounterVec::new(
            Opts::new(
                "gateway_api_key_auth_total",
                "API key checks by policy, key set (current, next, named, none) and result (ok, missing, invalid, expired, forbidden).",
            ),
            &["policy", "set", "result"],
        )?;
        let webhook_verifications = IntCounterVec::new(
            Opts::new(
                "gateway_webhook_verifications_total",
                "Webhook signature checks by route and result (ok, missing, malformed, stale, mismatch).",
            ),
            &["route", "result"],
        )?;
        let connections_rejected = prometheus::IntCounter::new(
            "gateway_connections_rejected_total",
            "Client connections closed at once for going over max_connections_per_ip.",
        )?;
        let tls_cert_expiry = prometheus::GaugeVec::new(
            Opts::new(
                "gateway_tls_cert_expiry_timestamp_seconds",
                "When each loaded certificate expires (Unix time).",
            ),
            &["cert"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "gateway_build_info",
                "Always 1; labels say which build is running.",
            ),
            &["version", "git_sha"],
        )?;
        build_info.with_label_values(&[version, git_sha]).set(1);

        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(upstream_duration.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(upstream_health.clone()))?;
        registry.register(Box::new(active_connections.clone()))?;
        registry.register(Box::new(requests_in_flight.clone()))?;
        registry.register(Box::new(access_log_dropped.clone()))?;
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(rate_limit_decisions.clone()))?;
        registry.register(Box::new(rate_limit_store_errors.clone()))?;
        registry.register(Box::new(lockouts.clone()))?;
        registry.register(Box::new(rate_limit_keys.clone()))?;
        registry.register(Box::new(rate_limit_evictions.clone()))?;
        registry.register(Box::new(config_reloads.clone()))?;
        registry.register(Box::new(requests_rejected.clone()))?;
        registry.register(Box::new(connections_rejected.clone()))?;
        registry.register(Box::new(api_key_auth.clone()))?;
        registry.register(Box::new(webhook_verifications.clone()))?;
        registry.register(Box::new(tls_cert_expiry.clone()))?;
        registry.register(Box::new(config_last_reload_success.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            request_duration,
            upstream_duration,
            upstream_errors,
            upstream_health,
            active_connections,
            requests_in_flight,
            access_log_dropped,
            rate_limit_decisions,
            rate_limit_store_errors,
            lockouts,
            rate_limit_keys,
            rate_limit_evictions,
            config_reloads,
            header_timeouts: requests_rejected.with_label_values(&[NO_ROUTE, "header_timeout"]),
            bad_heads: requests_rejected.with_label_values(&[NO_ROUTE, "bad_request"]),
            requests_rejected,
            api_key_auth,
            webhook_verifications,
            connections_rejected,
            config_last_reload_success,
            tls_cert_expiry,
        })
    }

    /// The Prometheus text exposition, with upstream health read from the live runtime.
    pub fn render(&self, runtime: &Runtime) -> Vec<u8> {
        // Reset so servers removed by a reload disappear instead of freezing at their last value.
        self.upstream_health.reset();
        let now = crate::upstream::now_ms();
        for pool in runtime.upstreams.values() {
            for server in &pool.servers {
                self.upstream_health
                    .with_label_values(&[pool.name.as_str(), server.label.as_str()])
                    .set(i64::from(server.health.is_available(now)));
            }
        }
        self.tls_cert_expiry.reset();
        for cert in runtime.tls.iter().flat_map(|store| store.certs.iter()) {
            self.tls_cert_expiry
                .with_label_values(&[cert.label.as_str()])
                .set(cert.not_after as f64);
        }
        self.rate_limit_keys.reset();
        self.rate_limit_evictions.reset();
        for (name, policy) in &runtime.rate_limits {
            self.rate_limit_keys
                .with_label_values(&[name.as_str()])
                .set(i64::try_from(policy.table.len()).unwrap_or(i64::MAX));
            self.rate_limit_evictions
                .with_label_values(&[name.as_str()])
                .inc_by(policy.table.evictions());
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::error!("cannot encode metrics: {e}");
        }
        out
    }
}

/// Methods outside the standard set share one label, so a client cannot grow the series.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}
