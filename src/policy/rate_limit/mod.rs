//! `[rate_limits.NAME]`: exact per-key limits (GCRA), local or shared through Redis, with the
//! standard 429 headers. A policy is one limit wherever it is used (`scope = "route"` makes it
//! one per route); a route lists policies and every one must allow; a request refused by one
//! is not charged to the others.

pub mod gcra;
pub mod local;
pub mod redis;

use std::fmt::{self, Write};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use crate::config::diagnostics::Diagnostics;
use crate::config::units::HumanDuration;
use crate::config::{KeyPath, SecretRef};
use crate::metrics::CounterSlots;
use crate::sharded::Sharded;
use crate::stack_str::StackStr;
use crate::state::Keep;
use gcra::{Outcome, Rate};
use local::LocalTable;
use redis::{OnError, RedisStore};
use smallvec::SmallVec;

/// One key or a list of them (a compound key).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "a key such as \"client_ip\", or a list of keys")]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// `[rate_limits.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// `client_ip` | `global` | `route` | `api_key` | `"header:NAME"`, or a list of these.
    /// Required.
    pub key: OneOrMany,
    /// Requests allowed per `per`. Required, at least 1.
    pub limit: u32,
    /// The window. Required.
    pub per: HumanDuration,
    /// Requests allowed at once. Default: `limit`.
    pub burst: Option<u32>,
    /// `local` | `redis`. Default `local`.
    #[serde(default = "default_store")]
    pub store: String,
    /// `policy` (one limit wherever used) | `route` (one per route). Default `policy`.
    #[serde(default = "default_scope")]
    pub scope: String,
    /// Keys kept (least recently seen evicted first). Default 1,000,000.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// A request without the key's header: `refuse` (400) | `shared` (one bucket for all of
    /// them). Default `refuse`.
    #[serde(default = "default_missing_key")]
    pub missing_key: String,
    /// Send `RateLimit` and `RateLimit-Policy` on allowed responses. Default true.
    #[serde(default = "yes")]
    pub headers: bool,
}

/// `[redis]`: the shared store for `store = "redis"` policies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://` or `rediss://` URL: a secret reference. Required.
    pub url: SecretRef,
    /// How long a decision may wait for Redis. Default `"20ms"`.
    #[serde(default = "default_redis_timeout")]
    pub timeout: HumanDuration,
    /// `local` | `allow` | `deny` when Redis does not answer. Default `local`.
    #[serde(default = "default_store")]
    pub on_error: String,
}

fn default_store() -> String {
    "local".into()
}
fn default_scope() -> String {
    "policy".into()
}
fn default_max_keys() -> usize {
    1_000_000
}
fn default_missing_key() -> String {
    "refuse".into()
}
fn default_redis_timeout() -> HumanDuration {
    HumanDuration(Duration::from_millis(20))
}
fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum KeyPart {
    ClientIp,
    Global,
    Route,
    /// The id of the API key the route's `auth` accepted.
    ApiKey,
    Header(HeaderName),
}

pub struct RateLimitPolicy {
    pub name: String,
    key: Vec<KeyPart>,
    per_route: bool,
    limit: u32,
    pub table: Arc<LocalTable>,
    redis: Option<Arc<RedisStore>>,
    pub send_headers: bool,
    missing_shared: bool,
    /// This policy's item in `RateLimit-Policy`: `"per_ip";q=20;w=60`.
    pub policy_item: String,
    /// The access log's `decision` when this policy refuses.
    pub decision: String,
    /// `gateway_rate_limit_decisions_total` of this policy, one slot per [`Decision`].
    pub counted: CounterSlots<4>,
}

/// The `result` label of `gateway_rate_limit_decisions_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Limited,
    MissingKey,
    Unavailable,
}

impl Decision {
    fn label(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Limited => "limited",
            Decision::MissingKey => "missing_key",
            Decision::Unavailable => "unavailable",
        }
    }
}

impl RateLimitPolicy {
    /// Counts one decision of this policy.
    pub fn count(&self, vec: &Sharded<prometheus::IntCounterVec>, decision: Decision) {
        self.counted.inc(
            decision as usize,
            vec,
            &[self.name.as_str(), decision.label()],
        );
    }
}

/// The compiled `[redis]` section.
pub struct SharedStore {
    pub store: Arc<RedisStore>,
}

impl SharedStore {
    pub fn compile(
        cfg: &RedisConfig,
        base: &std::path::Path,
        diags: &mut Diagnostics,
    ) -> Option<SharedStore> {
        let path = KeyPath::root().key("redis");
        let on_error = match cfg.on_error.as_str() {
            "local" => OnError::Local,
            "allow" => OnError::Allow,
            "deny" => OnError::Deny,
            other => {
                diags.error(
                    path.key("on_error"),
                    format!("`{other}` is not local, allow or deny"),
                );
                return None;
            }
        };
        let url = match cfg.url.resolve(base) {
            Ok(url) => url,
            Err(e) => {
                diags.error(path.key("url"), e);
                return None;
            }
        };
        match RedisStore::new(url.expose().trim(), cfg.timeout.0, on_error) {
            Ok(store) => Some(SharedStore {
                store: Arc::new(store),
            }),
            Err(e) => {
                diags.error(path.key("url"), e);
                None
            }
        }
    }
}

impl RateLimitPolicy {
    pub fn compile(
        name: &str,
        cfg: &RateLimitConfig,
        redis: Option<&SharedStore>,
        registry: &Keep<LocalTable>,
        diags: &mut Diagnostics,
    ) -> Option<RateLimitPolicy> {
        let path = KeyPath::root().key("rate_limits").key(name);
        let errors_before = diags.error_count();
        // The name is sent quoted in `RateLimit` and `RateLimit-Policy` (an RFC 8941 string).
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            diags.error(
                path.clone(),
                format!("the policy name {name:?} must be printable ASCII without `\"` or `\\` (it is sent in the RateLimit headers)"),
            );
        }
        let written: Vec<&String> = match &cfg.key {
            OneOrMany::One(k) => vec![k],
            OneOrMany::Many(list) => list.iter().collect(),
        };
        if written.is_empty() {
            diags.error(path.key("key"), "needs at least one key");
        }
        let mut key = Vec::new();
        for k in written {
            let part = match k.as_str() {
                "client_ip" => Some(KeyPart::ClientIp),
                "global" => Some(KeyPart::Global),
                "route" => Some(KeyPart::Route),
                "api_key" => Some(KeyPart::ApiKey),
                other => match other
                    .strip_prefix("header:")
                    .map(|h| HeaderName::from_bytes(h.trim().as_bytes()))
                {
                    Some(Ok(h)) => Some(KeyPart::Header(h)),
                    _ => {
                        diags.error(
                            path.key("key"),
                            format!("`{other}` is not a key: use client_ip, global, route, api_key or \"header:NAME\""),
                        );
                        None
                    }
                },
            };
            if let Some(part) = part {
                if !key.contains(&part) {
                    key.push(part);
                }
            }
        }
        if cfg.limit == 0 {
            diags.error(path.key("limit"), "must be at least 1");
        }
        if cfg.burst == Some(0) {
            diags.error(path.key("burst"), "must be at least 1");
        }
        let per = cfg.per.0;
        if per < Duration::from_secs(1) {
            diags.error(path.key("per"), "must be at least 1s");
        }
        if cfg.max_keys == 0 {
            diags.error(path.key("max_keys"), "must be at least 1");
        }
        let per_route = match cfg.scope.as_str() {
            "policy" => false,
            "route" => true,
            other => {
                diags.error(
                    path.key("scope"),
                    format!("`{other}` is not policy or route"),
                );
                false
            }
        };
        let missing_shared = match cfg.missing_key.as_str() {
            "refuse" => false,
            "shared" => true,
            other => {
                diags.error(
                    path.key("missing_key"),
                    format!("`{other}` is not refuse or shared"),
                );
                false
            }
        };
        let redis = match cfg.store.as_str() {
            "local" => None,
            "redis" => match redis {
                Some(shared) => Some(shared.store.clone()),
                None => {
                    diags.error(
                        path.key("store"),
                        "`redis` needs a [redis] section with its url",
                    );
                    None
                }
            },
            other => {
                diags.error(
                    path.key("store"),
                    format!("`{other}` is not local or redis"),
                );
                None
            }
        };
        if diags.error_count() > errors_before {
            return None;
        }
        let burst = cfg.burst.unwrap_or(cfg.limit);
        let rate = Rate::new(cfg.limit, per.as_micros() as u64, burst);
        let definition = format!(
            "{key:?}|{rate:?}|{}|{per_route}|{}",
            cfg.max_keys, cfg.store
        );
        let window_secs = per.as_secs();
        Some(RateLimitPolicy {
            name: name.to_string(),
            key,
            per_route,
            limit: cfg.limit,
            table: registry.get(name, definition, || LocalTable::new(rate, cfg.max_keys)),
            redis,
            send_headers: cfg.headers,
            missing_shared,
            policy_item: format!("\"{name}\";q={};w={window_secs}", cfg.limit),
            decision: format!("rate_limited:{name}"),
            counted: CounterSlots::default(),
        })
    }

    /// The compound key for a request: length-prefixed parts, so parts never run together.
    /// `Err(header)` when a header the key needs is missing and the policy refuses then.
    fn request_key(&self, req: &RequestFacts<'_>) -> Result<Key, HeaderName> {
        let mut out = Key::new();
        self.key_parts(req, |bytes| {
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        })?;
        Ok(out)
    }

    /// The local table's key for this request, hashed from its parts as they are read: the
    /// same key as [`Self::local_key_of`] its written-out [`Self::request_key`].
    fn local_key(&self, req: &RequestFacts<'_>) -> Result<u128, HeaderName> {
        let mut key = self.table.key_writer();
        self.key_parts(req, |bytes| key.part(bytes))?;
        Ok(key.finish())
    }

    /// The local table's key for a written-out [`Self::request_key`] (a store's fallback).
    fn local_key_of(&self, written: &[u8]) -> u128 {
        let mut key = self.table.key_writer();
        key.write(written);
        key.finish()
    }

    /// Feeds each part of this request's key to `push`, in order; the header the key needs
    /// when the request has none and the policy does not share one bucket among them.
    fn key_parts(
        &self,
        req: &RequestFacts<'_>,
        mut push: impl FnMut(&[u8]),
    ) -> Result<(), HeaderName> {
        if self.per_route {
            push(req.route.as_bytes());
        }
        for part in &self.key {
            match part {
                KeyPart::ClientIp => match req.client_ip {
                    Some(IpAddr::V4(ip)) => push(&ip.octets()),
                    Some(IpAddr::V6(ip)) => push(&ip.octets()),
                    None => push(b""),
                },
                KeyPart::Global => push(b"*"),
                KeyPart::Route => push(req.route.as_bytes()),
                KeyPart::ApiKey => push(req.key_id.unwrap_or("").as_bytes()),
                KeyPart::Header(name) => match req.headers.get(name) {
                    Some(v) => push(v.as_bytes()),
                    None if self.missing_shared => push(b"\0missing"),
                    None => return Err(name.clone()),
                },
            }
        }
        Ok(())
    }

    /// Charges one request; says which store took the charge, so a refund goes back there.
    async fn charge(
        &self,
        key: &[u8],
        now_us: u64,
        events: &mut Vec<Event>,
    ) -> Result<(Outcome, Charged), ()> {
        let local = || {
            (
                self.table.check(self.local_key_of(key), now_us),
                Charged::Local,
            )
        };
        let Some(redis) = &self.redis else {
            return Ok(local());
        };
        // Boxed: the Redis round trip's future is about 3.9 KB, which would otherwise be part
        // of every request's future (and its allocation), local limits included.
        match Box::pin(redis.check(&self.redis_key(key), self.table.rate(), false)).await {
            Ok(outcome) => Ok((outcome, Charged::Redis)),
            Err(_) => {
                events.push(Event::StoreError);
                match redis.on_error {
                    OnError::Local => Ok(local()),
                    OnError::Allow => Ok((
                        Outcome {
                            allowed: true,
                            remaining: u64::from(self.limit),
                            retry_after_us: 0,
                            reset_us: 0,
                        },
                        Charged::Nothing,
                    )),
                    OnError::Deny => Err(()),
                }
            }
        }
    }

    async fn refund(&self, key: &[u8], now_us: u64, charged: Charged) {
        match (charged, &self.redis) {
            (Charged::Local, _) => self.table.refund(self.local_key_of(key), now_us),
            (Charged::Redis, Some(redis)) => {
                let _ = Box::pin(redis.check(&self.redis_key(key), self.table.rate(), true)).await;
            }
            (Charged::Redis, None) | (Charged::Nothing, _) => {}
        }
    }

    fn redis_key(&self, key: &[u8]) -> Vec<u8> {
        [b"palisade:rl:", self.name.as_bytes(), b":", key].concat()
    }

    /// Counts per API key: checked after `auth`, and only on routes that have it.
    pub fn needs_identity(&self) -> bool {
        self.key.contains(&KeyPart::ApiKey)
    }

    /// Kept in this process only (`store = "local"`).
    pub fn is_local(&self) -> bool {
        self.redis.is_none()
    }

    /// Keyed on `global` alone: a cap on the total load.
    pub fn is_global(&self) -> bool {
        self.key == [KeyPart::Global] && !self.per_route
    }

    pub fn burst(&self) -> u64 {
        self.table.rate().burst()
    }
}

/// What a rate-limit key can be made of.
pub struct RequestFacts<'a> {
    pub client_ip: Option<IpAddr>,
    pub route: &'a str,
    pub headers: &'a HeaderMap,
    /// The accepted API key's id, once `auth` has run.
    pub key_id: Option<&'a str>,
}

/// Which store took a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charged {
    Local,
    Redis,
    /// `on_error = "allow"`: nothing was charged.
    Nothing,
}

/// Things worth counting that happened while deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    StoreError,
}

/// A request's compound key: on the stack unless a header part makes it long.
type Key = SmallVec<[u8; 48]>;

/// Each allowing policy and its outcome, for the `RateLimit` header: on the stack for the
/// usual one to four policies of a route, and borrowed from the route, so a request touches
/// no policy's reference count (a cache line every request thread would share).
pub type Allowed<'p> = SmallVec<[(&'p RateLimitPolicy, Outcome); 4]>;

pub enum Verdict<'p> {
    /// Every policy allowed; their outcomes were added to the caller's [`Allowed`].
    Allowed,
    Limited(&'p RateLimitPolicy, Outcome),
    MissingKey(&'p RateLimitPolicy, HeaderName),
    /// The store did not answer and the policy says `on_error = "deny"`.
    Unavailable(&'p RateLimitPolicy),
}

/// Checks every policy in order, adding each one's outcome to `allowed` when all allow. A
/// refusal gives back what earlier policies charged, so a refused request costs nothing.
pub async fn check_all<'p>(
    policies: &'p [Arc<RateLimitPolicy>],
    req: &RequestFacts<'_>,
    now_us: u64,
    events: &mut Vec<Event>,
    allowed: &mut Allowed<'p>,
) -> Verdict<'p> {
    if all_local(policies) {
        return check_all_local(policies, req, now_us, allowed);
    }
    let mut charged: SmallVec<[(&RateLimitPolicy, Key, Outcome, Charged); 4]> = SmallVec::new();
    let refusal = 'check: {
        for policy in policies {
            let key = match policy.request_key(req) {
                Ok(key) => key,
                Err(header) => break 'check Verdict::MissingKey(policy, header),
            };
            match policy.charge(&key, now_us, events).await {
                Ok((outcome, store)) if outcome.allowed => {
                    charged.push((policy, key, outcome, store))
                }
                Ok((outcome, _)) => break 'check Verdict::Limited(policy, outcome),
                Err(()) => break 'check Verdict::Unavailable(policy),
            }
        }
        allowed.extend(charged.into_iter().map(|(p, _, o, _)| (p, o)));
        return Verdict::Allowed;
    };
    for (policy, key, _, store) in &charged {
        policy.refund(key, now_us, *store).await;
    }
    refusal
}

/// Whether every policy is kept in this process (then [`check_all_local`] decides, with
/// nothing to wait for).
pub fn all_local(policies: &[Arc<RateLimitPolicy>]) -> bool {
    policies.iter().all(|p| p.is_local())
}

/// [`check_all`] when every policy is kept in this process: the same decisions and refunds,
/// with each key hashed from the request's parts as it is made and nothing to wait for. The
/// outcomes go straight into the caller's `allowed`; a refusal takes back the ones it added
/// (and their charges: their keys hashed again, as a refusal is rare).
pub fn check_all_local<'p>(
    policies: &'p [Arc<RateLimitPolicy>],
    req: &RequestFacts<'_>,
    now_us: u64,
    allowed: &mut Allowed<'p>,
) -> Verdict<'p> {
    let start = allowed.len();
    let refusal = 'check: {
        for policy in policies {
            let key = match policy.local_key(req) {
                Ok(key) => key,
                Err(header) => break 'check Verdict::MissingKey(policy, header),
            };
            let outcome = policy.table.check(key, now_us);
            if !outcome.allowed {
                break 'check Verdict::Limited(policy, outcome);
            }
            allowed.push((&**policy, outcome));
        }
        return Verdict::Allowed;
    };
    for (policy, _) in allowed.drain(start..) {
        if let Ok(key) = policy.local_key(req) {
            policy.table.refund(key, now_us);
        }
    }
    refusal
}

fn whole_seconds(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

/// `RateLimit-Policy` for a route's policies that send headers (built once per route).
pub fn policy_header(policies: &[Arc<RateLimitPolicy>]) -> Option<HeaderValue> {
    let items: Vec<&str> = policies
        .iter()
        .filter(|p| p.send_headers)
        .map(|p| p.policy_item.as_str())
        .collect();
    if items.is_empty() {
        return None;
    }
    HeaderValue::from_str(&items.join(", ")).ok()
}

/// `RateLimit` for an allowed request: each policy's remaining quota and seconds to full. As
/// text: an HTTP/1.x response gets it as a line, checked as it is written, with no
/// `HeaderValue` made for it. On the stack when it fits, as one policy's usually does (every
/// request), else on the heap.
pub fn allowed_header(outcomes: &[(&RateLimitPolicy, Outcome)]) -> Option<AllowedHeader> {
    let mut inline = StackStr::new();
    let value = match write_allowed(outcomes, &mut inline) {
        Ok(()) => AllowedHeader::Inline(inline),
        Err(_) => {
            let mut heap = String::with_capacity(2 * ALLOWED_INLINE);
            // Writing to a `String` does not fail.
            write_allowed(outcomes, &mut heap).ok()?;
            AllowedHeader::Heap(heap)
        }
    };
    (!value.as_bytes().is_empty()).then_some(value)
}

/// The bytes of an allowed request's `RateLimit` kept on the stack.
const ALLOWED_INLINE: usize = 96;

/// An allowed request's `RateLimit` value (see [`allowed_header`]).
pub enum AllowedHeader {
    Inline(StackStr<ALLOWED_INLINE>),
    Heap(String),
}

impl AllowedHeader {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            AllowedHeader::Inline(text) => text.as_bytes(),
            AllowedHeader::Heap(text) => text.as_bytes(),
        }
    }
}

/// `"name";r=REMAINING;t=SECONDS` per policy that sends headers, joined by `, `, without the
/// formatting machinery (every request).
fn write_allowed(outcomes: &[(&RateLimitPolicy, Outcome)], out: &mut impl Write) -> fmt::Result {
    let mut number = itoa::Buffer::new();
    let mut first = true;
    for (policy, o) in outcomes.iter().filter(|(p, _)| p.send_headers) {
        if !first {
            out.write_str(", ")?;
        }
        first = false;
        out.write_str("\"")?;
        out.write_str(&policy.name)?;
        out.write_str("\";r=")?;
        out.write_str(number.format(o.remaining))?;
        out.write_str(";t=")?;
        out.write_str(number.format(whole_seconds(o.reset_us)))?;
    }
    Ok(())
}

/// The headers of a 429: `Retry-After`, the legacy `X-RateLimit-*` and the IETF draft fields.
pub fn limited_headers(policy: &RateLimitPolicy, o: &Outcome) -> Vec<(HeaderName, HeaderValue)> {
    let retry = whole_seconds(o.retry_after_us).max(1);
    let reset_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + retry;
    let mut headers = vec![
        (http::header::RETRY_AFTER, HeaderValue::from(retry)),
        (
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderValue::from(policy.burst()),
        ),
        (
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderValue::from(0u32),
        ),
        (
            HeaderName::from_static("x-ratelimit-reset"),
            HeaderValue::from(reset_at),
        ),
    ];
    if let Ok(v) = HeaderValue::from_str(&policy.policy_item) {
        headers.push((HeaderName::from_static("ratelimit-policy"), v));
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\";r=0;t={retry}", policy.name)) {
        headers.push((HeaderName::from_static("ratelimit"), v));
    }
    headers
}

/// Resolves a list of policy names; unknown names are errors.
pub fn resolve(
    names: &[String],
    path: &KeyPath,
    policies: &std::collections::BTreeMap<String, Arc<RateLimitPolicy>>,
    diags: &mut Diagnostics,
) -> Vec<Arc<RateLimitPolicy>> {
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        match policies.get(name) {
            Some(p) if out.iter().any(|o: &Arc<RateLimitPolicy>| o.name == p.name) => {
                diags.error(path.index(i), format!("`{name}` is listed twice"));
            }
            Some(p) => out.push(p.clone()),
            None => {
                let known: Vec<&str> = policies.keys().map(String::as_str).collect();
                diags.error(
                    path.index(i),
                    format!(
                        "unknown rate limit `{name}`; defined: {}",
                        crate::runtime::list_or_none(&known)
                    ),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, toml_text: &str) -> RateLimitPolicy {
        let cfg: RateLimitConfig = toml::from_str(toml_text).unwrap();
        let mut diags = Diagnostics::default();
        let p = RateLimitPolicy::compile(name, &cfg, None, &Keep::default(), &mut diags);
        p.unwrap_or_else(|| {
            panic!(
                "{:?}",
                diags.list.iter().map(|d| &d.reason).collect::<Vec<_>>()
            )
        })
    }

    #[test]
    fn the_allowed_header_is_the_same_on_the_stack_and_on_the_heap() {
        let text = "key = \"client_ip\"\nlimit = 5\nper = \"1s\"\n";
        let outcome = |remaining| Outcome {
            allowed: true,
            remaining,
            retry_after_us: 0,
            reset_us: 1_500_000,
        };
        let short = policy("per_ip", text);
        let quiet = policy("quiet", &format!("{text}headers = false\n"));
        let value = |outcomes: &[(&RateLimitPolicy, Outcome)]| {
            allowed_header(outcomes).map(|v| {
                let inline = matches!(v, AllowedHeader::Inline(_));
                (String::from_utf8(v.as_bytes().to_vec()).unwrap(), inline)
            })
        };
        assert_eq!(
            value(&[(&short, outcome(4)), (&quiet, outcome(1))]),
            Some(("\"per_ip\";r=4;t=2".to_string(), true))
        );
        assert_eq!(value(&[(&quiet, outcome(1))]), None);
        // Two policies whose value does not fit on the stack: all of it on the heap, none lost.
        let long_name = "a".repeat(ALLOWED_INLINE);
        let long = policy(&long_name, text);
        assert_eq!(
            value(&[(&short, outcome(3)), (&long, outcome(2))]),
            Some((
                format!("\"per_ip\";r=3;t=2, \"{long_name}\";r=2;t=2"),
                false
            ))
        );
    }

    #[test]
    fn a_local_key_is_the_key_a_store_fallback_makes() {
        // A Redis policy that falls back to its local table keys it by the written-out key;
        // a local policy hashes the same bytes as it goes. Both must land in one bucket.
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", HeaderValue::from_static("acme"));
        let v4 = Some("203.0.113.7".parse().unwrap());
        let v6 = Some("2001:db8::1".parse().unwrap());
        let cases = [
            "key = \"client_ip\"\nlimit = 5\nper = \"1s\"\n",
            "key = [\"client_ip\", \"route\", \"api_key\"]\nlimit = 5\nper = \"1s\"\n",
            "key = [\"global\", \"header:x-tenant\"]\nlimit = 5\nper = \"1s\"\nscope = \"route\"\n",
            "key = \"header:x-missing\"\nlimit = 5\nper = \"1s\"\nmissing_key = \"shared\"\n",
        ];
        for (i, text) in cases.iter().enumerate() {
            let p = policy(&format!("p{i}"), text);
            for (client_ip, key_id) in [(v4, Some("ops")), (v6, None), (None, Some(""))] {
                let facts = RequestFacts {
                    client_ip,
                    route: "api",
                    headers: &headers,
                    key_id,
                };
                let written = p.request_key(&facts).unwrap();
                let expected = p.local_key_of(&written);
                assert_eq!(p.local_key(&facts).unwrap(), expected, "{text}");
            }
        }
        let p = policy(
            "strict",
            "key = \"header:x-missing\"\nlimit = 5\nper = \"1s\"\n",
        );
        let facts = RequestFacts {
            client_ip: v4,
            route: "api",
            headers: &headers,
            key_id: None,
        };
        assert_eq!(p.local_key(&facts).unwrap_err(), "x-missing");
    }
}
