//! The metric registry with typed handles. Every label is bounded: routes by configured name,
//! methods folded to the standard set, statuses to their class, upstreams and servers by name.

use http::Method;
use std::sync::OnceLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::runtime::Runtime;
use crate::sharded::{LazyPerShard, Sharded};

pub struct Metrics {
    registry: Registry,
    /// The series of requests no route matched (`route="-"`, whatever the config).
    pub unrouted: RouteSeries,
    /// Sharded (`crate::sharded`): every request counts into these.
    pub requests: Sharded<IntCounterVec>,
    pub request_duration: Sharded<HistogramVec>,
    pub upstream_duration: Sharded<HistogramVec>,
    pub upstream_errors: IntCounterVec,
    upstream_health: IntGaugeVec,
    pub active_connections: IntGauge,
    pub requests_in_flight: Sharded<IntGauge>,
    pub access_log_dropped: prometheus::IntCounter,
    /// Sharded: every request under a rate limit counts into this.
    pub rate_limit_decisions: Sharded<IntCounterVec>,
    pub rate_limit_store_errors: IntCounterVec,
    pub lockouts: IntCounterVec,
    rate_limit_keys: IntGaugeVec,
    rate_limit_evictions: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub requests_rejected: IntCounterVec,
    /// `requests_rejected{route="-"}` for the refusals counted per connection, resolved once.
    pub header_timeouts: prometheus::IntCounter,
    pub bad_heads: prometheus::IntCounter,
    /// Sharded: every request under an API key check counts into this.
    pub api_key_auth: Sharded<IntCounterVec>,
    /// Sharded: every request under a webhook check counts into this.
    pub webhook_verifications: Sharded<IntCounterVec>,
    pub connections_rejected: prometheus::IntCounter,
    pub config_last_reload_success: prometheus::Gauge,
    tls_cert_expiry: prometheus::GaugeVec,
}

/// An [`IntCounterVec`] kept in [`Sharded`] copies: the counters every request counts into.
fn sharded_counter_vec(
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<Sharded<IntCounterVec>, prometheus::Error> {
    Sharded::new(|| IntCounterVec::new(Opts::new(name, help), labels))
}

/// Label used when a request matched no route.
pub const NO_ROUTE: &str = "-";

impl Metrics {
    pub fn new(version: &str, git_sha: &str) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = sharded_counter_vec(
            "gateway_requests_total",
            "Requests answered, by route, method and status class.",
            &["route", "method", "status_class"],
        )?;
        let request_duration = Sharded::new(|| {
            HistogramVec::new(
                HistogramOpts::new(
                    "gateway_request_duration_seconds",
                    "Time from request to last response byte, by route.",
                ),
                &["route"],
            )
        })?;
        let upstream_duration = Sharded::new(|| {
            HistogramVec::new(
                HistogramOpts::new(
                    "gateway_upstream_duration_seconds",
                    "Time from choosing an upstream server to its response header, by upstream.",
                ),
                &["upstream"],
            )
        })?;
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
        let requests_in_flight = Sharded::new(|| {
            IntGauge::new("gateway_requests_in_flight", "Requests being handled now.")
        })?;
        let access_log_dropped = prometheus::IntCounter::new(
            "gateway_access_log_dropped_total",
            "Access log lines dropped because the writer fell behind.",
        )?;
        let rate_limit_decisions = sharded_counter_vec(
            "gateway_rate_limit_decisions_total",
            "Rate-limit decisions by policy and result (allowed, limited, missing_key, unavailable).",
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
        let api_key_auth = sharded_counter_vec(
            "gateway_api_key_auth_total",
            "API key checks by policy, key set (current, next, named, none) and result (ok, missing, invalid, expired, forbidden).",
            &["policy", "set", "result"],
        )?;
        let webhook_verifications = sharded_counter_vec(
            "gateway_webhook_verifications_total",
            "Webhook signature checks by route and result (ok, missing, malformed, stale, mismatch).",
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
            unrouted: RouteSeries::default(),
        })
    }

    /// `gateway_requests_in_flight`: the requests being handled now, over all shards.
    pub fn in_flight(&self) -> i64 {
        self.requests_in_flight
            .copies()
            .iter()
            .map(|copy| copy.get())
            .sum()
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

/// The method labels; methods outside the standard set share the last, so a client cannot
/// grow the series.
const METHOD_LABELS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "OTHER",
];

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::PATCH => 5,
        Method::OPTIONS => 6,
        Method::CONNECT => 7,
        Method::TRACE => 8,
        _ => 9,
    }
}

const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "none"];

fn status_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        500..=599 => 4,
        _ => 5,
    }
}

/// Counters of one [`Sharded`] metric vec for a small fixed set of label combinations, each
/// looked up in every copy on first use and kept. Counting is then one atomic add into this
/// thread's copy: no hashing of labels and no read of the vec's lock-guarded map, a lock every
/// request thread would share. A slot stands for one combination; the caller maps its
/// combinations to slots.
pub struct CounterSlots<const N: usize>([LazyPerShard<IntCounter>; N]);

impl<const N: usize> Default for CounterSlots<N> {
    fn default() -> Self {
        CounterSlots(std::array::from_fn(|_| OnceLock::new()))
    }
}

impl<const N: usize> CounterSlots<N> {
    /// Adds one to the counter of `labels`, kept in `slot`.
    pub fn inc(&self, slot: usize, vec: &Sharded<IntCounterVec>, labels: &[&str]) {
        match self.0.get(slot) {
            Some(cell) => cell
                .get_or_init(|| vec.each(|copy| copy.with_label_values(labels)))
                .mine()
                .inc(),
            None => vec.mine().with_label_values(labels).inc(),
        }
    }
}

/// Counters of one vec whose last label comes from an open set of `&'static str` (a refusal's
/// reason): each of the first reasons seen claims a slot, without a lock (a thread that loses
/// the race for a slot to another reason moves on to the next); reasons beyond the slots are
/// counted by the vec's own lookup.
pub struct ReasonSlots([OnceLock<(&'static str, IntCounter)>; 12]);

impl Default for ReasonSlots {
    fn default() -> Self {
        ReasonSlots(std::array::from_fn(|_| OnceLock::new()))
    }
}

impl ReasonSlots {
    /// Adds one to the counter of `labels` and then `reason`.
    pub fn inc(&self, vec: &IntCounterVec, labels: &[&str], reason: &'static str) {
        let lookup = || {
            let mut all = labels.to_vec();
            all.push(reason);
            vec.with_label_values(&all)
        };
        for slot in &self.0 {
            let (held, counter) = slot.get_or_init(|| (reason, lookup()));
            if *held == reason {
                counter.inc();
                return;
            }
        }
        lookup().inc();
    }
}

/// A route's request counters and duration histogram, its refusals and webhook checks, kept
/// with the route (or, for requests no route matched, in [`Metrics::unrouted`]).
#[derive(Default)]
pub struct RouteSeries {
    requests: CounterSlots<{ METHOD_LABELS.len() * STATUS_CLASSES.len() }>,
    duration: LazyPerShard<Histogram>,
    rejected: ReasonSlots,
    /// `gateway_webhook_verifications_total`, by the caller's slot for its result.
    webhook: CounterSlots<8>,
}

impl RouteSeries {
    /// Counts a finished request of the route named `route` (the label, used on first use).
    pub fn record(
        &self,
        metrics: &Metrics,
        route: &str,
        method: &Method,
        status: u16,
        seconds: f64,
    ) {
        let (m, s) = (method_index(method), status_index(status));
        self.requests.inc(
            m * STATUS_CLASSES.len() + s,
            &metrics.requests,
            &[route, METHOD_LABELS[m], STATUS_CLASSES[s]],
        );
        self.duration
            .get_or_init(|| {
                metrics
                    .request_duration
                    .each(|vec| vec.with_label_values(&[route]))
            })
            .mine()
            .observe(seconds);
    }

    /// Counts a refusal in `gateway_requests_rejected_total`.
    pub fn reject(&self, metrics: &Metrics, route: &str, reason: &'static str) {
        self.rejected
            .inc(&metrics.requests_rejected, &[route], reason);
    }

    /// Counts a webhook check in `gateway_webhook_verifications_total`; `slot` stands for
    /// `result`.
    pub fn webhook(&self, metrics: &Metrics, route: &str, slot: usize, result: &str) {
        self.webhook
            .inc(slot, &metrics.webhook_verifications, &[route, result]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(m: &Metrics, labels: &[&str]) -> u64 {
        m.requests
            .copies()
            .iter()
            .map(|copy| copy.with_label_values(labels).get())
            .sum()
    }

    #[test]
    fn kept_series_count_into_the_vec_under_their_labels() {
        let m = Metrics::new("test", "none").unwrap();
        let (a, b) = (RouteSeries::default(), RouteSeries::default());
        for _ in 0..3 {
            a.record(&m, "api", &Method::GET, 200, 0.01);
        }
        a.record(&m, "api", &Method::from_bytes(b"PURGE").unwrap(), 503, 0.01);
        a.record(&m, "api", &Method::POST, 0, 0.01);
        b.record(&m, "web", &Method::GET, 404, 0.01);
        assert_eq!(value(&m, &["api", "GET", "2xx"]), 3);
        assert_eq!(value(&m, &["api", "OTHER", "5xx"]), 1);
        assert_eq!(value(&m, &["api", "POST", "none"]), 1);
        assert_eq!(value(&m, &["web", "GET", "4xx"]), 1);
        assert_eq!(value(&m, &["api", "GET", "4xx"]), 0);
        let count: u64 = m
            .request_duration
            .copies()
            .iter()
            .map(|copy| copy.with_label_values(&["api"]).get_sample_count())
            .sum();
        assert_eq!(count, 5);
    }

    #[test]
    fn reasons_claim_slots_and_the_ones_past_the_slots_still_count() {
        let m = Metrics::new("test", "none").unwrap();
        let slots = ReasonSlots::default();
        let reasons: Vec<&'static str> = (0..20)
            .map(|i| &*Box::leak(format!("reason_{i}").into_boxed_str()))
            .collect();
        for (i, reason) in reasons.iter().enumerate() {
            for _ in 0..=i {
                slots.inc(&m.requests_rejected, &["r"], reason);
            }
        }
        slots.inc(&m.requests_rejected, &["r"], reasons[0]);
        for (i, reason) in reasons.iter().enumerate() {
            let want = if i == 0 { 2 } else { i as u64 + 1 };
            assert_eq!(
                m.requests_rejected.with_label_values(&["r", reason]).get(),
                want
            );
        }
    }

    /// Threads racing for the same empty slots with different reasons: every reason still
    /// counts exactly, in slots or past them.
    #[test]
    fn racing_reasons_all_count_exactly() {
        let m = Metrics::new("test", "none").unwrap();
        let slots = ReasonSlots::default();
        let reasons: Vec<&'static str> = (0..16)
            .map(|i| &*Box::leak(format!("race_{i}").into_boxed_str()))
            .collect();
        std::thread::scope(|scope| {
            for t in 0..4 {
                let (slots, m, reasons) = (&slots, &m, &reasons);
                scope.spawn(move || {
                    for n in 0..500 {
                        let reason = reasons[(n + t * 5) % reasons.len()];
                        slots.inc(&m.requests_rejected, &["r"], reason);
                    }
                });
            }
        });
        let total: u64 = reasons
            .iter()
            .map(|r| m.requests_rejected.with_label_values(&["r", r]).get())
            .sum();
        assert_eq!(total, 4 * 500);
        for r in &reasons {
            // Each thread gives every reason 500 / 16 rounded up or down.
            let n = m.requests_rejected.with_label_values(&["r", r]).get();
            assert!((4 * 31..=4 * 32).contains(&n), "{r}: {n}");
        }
    }

    #[test]
    fn a_slot_past_the_end_still_counts() {
        let m = Metrics::new("test", "none").unwrap();
        let slots = CounterSlots::<1>::default();
        slots.inc(0, &m.requests, &["r", "GET", "2xx"]);
        slots.inc(5, &m.requests, &["r", "GET", "3xx"]);
        assert_eq!(value(&m, &["r", "GET", "2xx"]), 1);
        assert_eq!(value(&m, &["r", "GET", "3xx"]), 1);
    }
}
