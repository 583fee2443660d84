//! `[api_keys.NAME]`: API keys in a `current` and a `next` set (both accepted, so keys rotate
//! without downtime) and keys with an identity, roles and an expiry.
//!
//! Only SHA-256 digests are kept in memory. A presented key is hashed and compared in constant
//! time against every digest, whichever matches, so the time taken never says which key (or
//! which set) matched, nor how close a guess came.
//!
//! A key that matched is remembered on its thread by a keyed hash of it (SipHash-2-4, 128 bits,
//! under a key drawn at load), not by the key: its next request costs that hash, not SHA-256.
//! Without the hash's key the tags say nothing of the keys and cannot be matched by another
//! key; a remembered key is found in the same time whichever it is. Only that a key was
//! accepted shortly before shows in the time, which its 200 already told the client.

use std::borrow::Cow;
use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use siphasher::sip128::SipHasher24;
use subtle::{ConditionallySelectable, ConstantTimeEq};

use crate::config::diagnostics::Diagnostics;
use crate::config::{KeyPath, SecretRef};
use crate::log::LogName;
use crate::metrics::CounterSlots;

/// Keys shorter than this are refused unless given as digests: a short key can be guessed.
pub const MIN_KEY_LEN: usize = 16;

/// `[api_keys.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysConfig {
    /// The request header holding the key. Default `"X-API-Key"` (when neither `query` nor
    /// `bearer` is set).
    pub header: Option<String>,
    /// The query parameter holding the key (removed before the request is forwarded).
    pub query: Option<String>,
    /// The key is an `Authorization: Bearer` token. Default false.
    #[serde(default)]
    pub bearer: bool,
    /// Keys in use: comma-separated (`env`) or one per line (`file`, `#` comments), plain or
    /// `sha256:<hex>` digests.
    pub current: Option<SecretRef>,
    /// Keys being rolled out, accepted alongside `current`.
    pub next: Option<SecretRef>,
    /// Keys with an identity.
    #[serde(default)]
    pub keys: Vec<NamedKeyConfig>,
    /// Write an audit event for every accepted key too (failures always are). Default true.
    #[serde(default = "yes")]
    pub log_success: bool,
}

/// `[[api_keys.NAME.keys]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedKeyConfig {
    /// Sent upstream in `X-Palisade-Key-Id`, logged, and what `key = "api_key"` counts by.
    pub id: String,
    /// `sha256:<hex>` of the key.
    pub hash: Option<String>,
    /// The key itself, as a secret reference (instead of `hash`).
    pub key: Option<SecretRef>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// RFC 3339 time after which the key is refused (401).
    pub expires: Option<String>,
}

/// A route's `auth = { api_keys = NAME, roles = [...] }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The `[api_keys.NAME]` policy. Required.
    pub api_keys: String,
    /// The key needs one of these roles (403 otherwise). Default: any valid key.
    #[serde(default)]
    pub roles: Vec<String>,
}

fn yes() -> bool {
    true
}

/// Where a request carries its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Header(HeaderName),
    Query(String),
    Bearer,
}

/// Which set a key came from: the `set` label of `gateway_api_key_auth_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySet {
    Current,
    Next,
    Named,
}

impl KeySet {
    pub fn label(self) -> &'static str {
        match self {
            KeySet::Current => "current",
            KeySet::Next => "next",
            KeySet::Named => "named",
        }
    }
}

pub struct KeyEntry {
    /// The SHA-256 digest, as four words (see [`ApiKeyPolicy::find`]).
    digest: [u64; 4],
    /// The named key's `id`, or `key-` and the start of the digest for a set's key (the same
    /// whether the key sits in `next` or, once promoted, in `current`).
    pub id: Arc<str>,
    /// The id as the access log writes it.
    pub log_id: LogName,
    pub set: KeySet,
    pub roles: Vec<String>,
    /// Seconds since the epoch after which the key is refused.
    expires_at: Option<u64>,
    /// Its place in the policy's entries (see [`ApiKeyPolicy::entry`]).
    pub index: u32,
    /// What the upstream is told of the key, as HTTP/1.1 header lines made at load:
    /// `X-Palisade-Key-Id`, `X-Palisade-Key-Set` and, when it has roles,
    /// `X-Palisade-Key-Roles` (ids and roles are checked to be letters, digits and `_-.:`).
    pub upstream_lines: Box<[u8]>,
}

impl KeyEntry {
    /// An entry whose `index` is set once the policy's entries are all known.
    fn new(digest: &[u8; 32], id: Arc<str>, set: KeySet, roles: Vec<String>) -> KeyEntry {
        let mut lines = format!(
            "x-palisade-key-id: {id}\r\nx-palisade-key-set: {}\r\n",
            set.label()
        );
        if !roles.is_empty() {
            lines.push_str(&format!("x-palisade-key-roles: {}\r\n", roles.join(",")));
        }
        KeyEntry {
            digest: words(digest),
            log_id: LogName::new(&id),
            id,
            set,
            roles,
            expires_at: None,
            index: 0,
            upstream_lines: lines.into_bytes().into_boxed_slice(),
        }
    }
}

pub struct ApiKeyPolicy {
    pub name: String,
    pub credential: Credential,
    /// Named keys first, then `current`, then `next`: when one key is in two places, the first
    /// place wins.
    entries: Vec<KeyEntry>,
    pub log_success: bool,
    /// `WWW-Authenticate` for a 401.
    pub challenge: HeaderValue,
    /// `gateway_api_key_auth_total` of this policy, by [`AuthOutcome::metric_slot`].
    pub counted: CounterSlots<20>,
    /// Tells this policy's keys apart in the per-thread memory of matched keys (a reload
    /// makes a new policy, whose entries may sit at other places).
    id: u64,
    /// The keyed hash the per-thread memory knows a matched key by (a random key per policy).
    tagger: SipHasher24,
}

/// Per thread: the keys matched last, as (policy id, tag of the key as presented, entry index).
const RECENT_SLOTS: usize = 64;

#[derive(Clone, Copy)]
struct Recent {
    policy: u64,
    tag: u128,
    entry: u32,
}

thread_local! {
    static RECENT: RefCell<[Recent; RECENT_SLOTS]> =
        const { RefCell::new([Recent { policy: 0, tag: 0, entry: 0 }; RECENT_SLOTS]) };
}

/// Policy ids start at 1: an empty slot (policy 0) never matches.
static POLICY_IDS: AtomicU64 = AtomicU64::new(1);

/// The result of checking a request's key against a route's `auth`.
pub enum AuthOutcome<'a> {
    Accepted(&'a KeyEntry),
    /// No key in the request.
    Missing,
    /// A key no set holds, or a malformed credential.
    Invalid,
    Expired(&'a KeyEntry),
    /// A valid key without any of the route's roles.
    Forbidden(&'a KeyEntry),
}

impl AuthOutcome<'_> {
    /// The `result` label and the audit event's reason.
    pub fn result(&self) -> &'static str {
        match self {
            AuthOutcome::Accepted(_) => "ok",
            AuthOutcome::Missing => "missing",
            AuthOutcome::Invalid => "invalid",
            AuthOutcome::Expired(_) => "expired",
            AuthOutcome::Forbidden(_) => "forbidden",
        }
    }

    /// The outcome's slot in [`ApiKeyPolicy::counted`]: one per `set` and `result` label.
    pub fn metric_slot(&self) -> usize {
        let set = match self.entry().map(|e| e.set) {
            Some(KeySet::Current) => 0,
            Some(KeySet::Next) => 1,
            Some(KeySet::Named) => 2,
            None => 3,
        };
        let result = match self {
            AuthOutcome::Accepted(_) => 0,
            AuthOutcome::Missing => 1,
            AuthOutcome::Invalid => 2,
            AuthOutcome::Expired(_) => 3,
            AuthOutcome::Forbidden(_) => 4,
        };
        set * 5 + result
    }

    pub fn entry(&self) -> Option<&KeyEntry> {
        match self {
            AuthOutcome::Accepted(e) | AuthOutcome::Expired(e) | AuthOutcome::Forbidden(e) => {
                Some(e)
            }
            AuthOutcome::Missing | AuthOutcome::Invalid => None,
        }
    }
}

impl ApiKeyPolicy {
    /// Compiles `[api_keys.NAME]`, reading every key source.
    pub fn compile(
        name: &str,
        cfg: &ApiKeysConfig,
        base: &Path,
        diags: &mut Diagnostics,
    ) -> Option<ApiKeyPolicy> {
        let path = KeyPath::root().key("api_keys").key(name);
        let errors_before = diags.error_count();
        let credential = match (&cfg.header, &cfg.query, cfg.bearer) {
            (None, None, false) => Some(Credential::Header(HeaderName::from_static("x-api-key"))),
            (Some(h), None, false) => match HeaderName::from_bytes(h.trim().as_bytes()) {
                Ok(h) if h == http::header::AUTHORIZATION => {
                    diags.error(
                        path.key("header"),
                        "for `Authorization: Bearer` keys write `bearer = true`",
                    );
                    None
                }
                Ok(h) => Some(Credential::Header(h)),
                Err(_) => {
                    diags.error(path.key("header"), format!("`{h}` is not a header name"));
                    None
                }
            },
            (None, Some(q), false) if valid_query_name(q) => Some(Credential::Query(q.clone())),
            (None, Some(q), false) => {
                diags.error(
                    path.key("query"),
                    format!("`{q}` is not a query parameter name (letters, digits, `_`, `-`, `.`)"),
                );
                None
            }
            (None, None, true) => Some(Credential::Bearer),
            _ => {
                diags.error(
                    path.clone(),
                    "set one of `header`, `query` or `bearer = true`: where the key is read",
                );
                None
            }
        };
        let now = unix_now();
        let mut entries = Vec::new();
        let mut ids = std::collections::HashSet::new();
        for (i, key) in cfg.keys.iter().enumerate() {
            let at = path.key("keys").index(i);
            let valid_id = !key.id.is_empty()
                && key.id.len() <= 64
                && key
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
            if !valid_id {
                diags.error(
                    at.key("id"),
                    format!(
                        "`{}` must be 1-64 letters, digits, `_`, `-`, `.` or `:` (it is sent upstream and logged)",
                        key.id
                    ),
                );
            } else if !ids.insert(key.id.as_str()) {
                diags.error(at.key("id"), format!("key id `{}` is used twice", key.id));
            }
            let digest = match (&key.hash, &key.key) {
                (Some(hash), None) => parse_digest(hash).map_err(|e| (at.key("hash"), e)),
                (None, Some(secret)) => secret
                    .resolve(base)
                    .map_err(|e| (at.key("key"), e))
                    .and_then(|s| key_digest(s.expose().trim()).map_err(|e| (at.key("key"), e))),
                _ => Err((
                    at.clone(),
                    "set one of `hash = \"sha256:...\"` or `key = { env = ... }`".to_string(),
                )),
            };
            let digest = match digest {
                Ok(d) => d,
                Err((at, e)) => {
                    diags.error(at, e);
                    continue;
                }
            };
            let expires_at = match key.expires.as_deref().map(parse_time) {
                None => None,
                Some(Ok(t)) => {
                    if t <= now {
                        diags.warn(
                            at.key("expires"),
                            format!("key `{}` has expired: it is refused", key.id),
                        );
                    } else if t - now < 14 * 86_400 {
                        diags.warn(
                            at.key("expires"),
                            format!(
                                "key `{}` expires in {} day(s)",
                                key.id,
                                (t - now).div_ceil(86_400)
                            ),
                        );
                    }
                    Some(t)
                }
                Some(Err(e)) => {
                    diags.error(at.key("expires"), e);
                    None
                }
            };
            for (j, role) in key.roles.iter().enumerate() {
                let valid = !role.is_empty()
                    && role.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':')
                    });
                if !valid {
                    diags.error(
                        at.key("roles").index(j),
                        format!("role `{role}` must be letters, digits, `_`, `-`, `.` or `:`"),
                    );
                }
            }
            entries.push(KeyEntry {
                expires_at,
                ..KeyEntry::new(
                    &digest,
                    key.id.as_str().into(),
                    KeySet::Named,
                    key.roles.clone(),
                )
            });
        }
        for (set, source, key) in [
            (KeySet::Current, &cfg.current, "current"),
            (KeySet::Next, &cfg.next, "next"),
        ] {
            let Some(source) = source else { continue };
            let text = match resolve_set(source, base) {
                Ok(text) => text,
                Err(e) => {
                    diags.error(path.key(key), e);
                    continue;
                }
            };
            for (n, item) in split_keys(&text).enumerate() {
                match key_digest(item) {
                    Ok(digest) => entries.push(KeyEntry::new(
                        &digest,
                        set_key_id(&digest).into(),
                        set,
                        Vec::new(),
                    )),
                    Err(e) => diags.error(path.key(key), format!("key {}: {e}", n + 1)),
                }
            }
        }
        if entries.is_empty() && diags.error_count() == errors_before {
            diags.error(
                path.clone(),
                "no keys: set `current` (and `next` while rotating) or add [[api_keys.NAME.keys]]",
            );
        }
        if diags.error_count() > errors_before {
            return None;
        }
        for (i, entry) in entries.iter_mut().enumerate() {
            entry.index = i as u32;
        }
        let credential = credential?;
        let Some(tag_key) = tag_key() else {
            diags.error(
                path.clone(),
                "the system gave no random bytes to key this policy's cache of matched keys",
            );
            return None;
        };
        let challenge = match &credential {
            Credential::Bearer => format!("Bearer realm=\"{name}\""),
            Credential::Header(h) => format!("ApiKey realm=\"{name}\", header=\"{h}\""),
            Credential::Query(q) => format!("ApiKey realm=\"{name}\", query=\"{q}\""),
        };
        Some(ApiKeyPolicy {
            name: name.to_string(),
            credential,
            entries,
            log_success: cfg.log_success,
            challenge: HeaderValue::from_str(&challenge)
                .unwrap_or_else(|_| HeaderValue::from_static("ApiKey")),
            counted: CounterSlots::default(),
            id: POLICY_IDS.fetch_add(1, Ordering::Relaxed),
            tagger: SipHasher24::new_with_key(&tag_key),
        })
    }

    /// The entry at `index` (a [`KeyEntry::index`] of this policy).
    pub fn entry(&self, index: u32) -> Option<&KeyEntry> {
        self.entries.get(index as usize)
    }

    /// [`Self::authenticate_at`] at a given time (tests, benchmarks).
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        roles: &[String],
        now_secs: u64,
    ) -> AuthOutcome<'_> {
        self.authenticate_at(headers, query, roles, || now_secs)
    }

    /// Checks the request's key; `roles` are the route's (any one of them is enough).
    /// `now_secs` (Unix time) is read only for a key that expires: a clock read is not free.
    pub fn authenticate_at(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        roles: &[String],
        now_secs: impl FnOnce() -> u64,
    ) -> AuthOutcome<'_> {
        let presented = match self.presented(headers, query) {
            Presented::Key(key) => key,
            Presented::None => return AuthOutcome::Missing,
            Presented::Malformed => return AuthOutcome::Invalid,
        };
        let Some(entry) = self.find(&presented) else {
            return AuthOutcome::Invalid;
        };
        if entry.expires_at.is_some_and(|t| now_secs() >= t) {
            return AuthOutcome::Expired(entry);
        }
        if !roles.is_empty() && !roles.iter().any(|r| entry.roles.contains(r)) {
            return AuthOutcome::Forbidden(entry);
        }
        AuthOutcome::Accepted(entry)
    }

    /// The entry whose digest matches: from this thread's memory of the keys matched last when
    /// the key is there, else by [`ApiKeyPolicy::find_by_digest`], remembered when found.
    fn find(&self, presented: &[u8]) -> Option<&KeyEntry> {
        let tag = u128::from(self.tagger.hash(presented));
        let slot = (tag as usize ^ self.id as usize) % RECENT_SLOTS;
        let remembered = RECENT.with(|recent| {
            let r = recent.borrow()[slot];
            // The tags compared without an early exit, as the digests are.
            let same = (r.tag ^ tag).ct_eq(&0);
            (r.policy == self.id && bool::from(same)).then_some(r.entry)
        });
        if let Some(i) = remembered {
            return self.entries.get(i as usize);
        }
        let i = self.find_by_digest(presented)?;
        RECENT.with(|recent| {
            recent.borrow_mut()[slot] = Recent {
                policy: self.id,
                tag,
                entry: i,
            }
        });
        self.entries.get(i as usize)
    }

    /// The index of the entry whose digest matches, looked for in constant time: every digest
    /// is compared, and the comparisons do not stop at a difference.
    fn find_by_digest(&self, presented: &[u8]) -> Option<u32> {
        #[cfg(test)]
        tests::DIGESTS.with(|n| n.set(n.get() + 1));
        // Each digest is XORed word by word with the presented one and the differences ORed
        // together: no branch and no early exit depends on the bytes, and a single
        // constant-time comparison of the result with zero says whether they were equal.
        let digest = words(&sha256(presented));
        let none = u32::MAX;
        let mut found = none;
        for (i, entry) in self.entries.iter().enumerate() {
            let diff = (entry.digest[0] ^ digest[0])
                | (entry.digest[1] ^ digest[1])
                | (entry.digest[2] ^ digest[2])
                | (entry.digest[3] ^ digest[3]);
            let hit = diff.ct_eq(&0) & found.ct_eq(&none);
            found = u32::conditional_select(&found, &(i as u32), hit);
        }
        (found != none).then_some(found)
    }

    /// The key the request carries, borrowed from its header where it can be.
    fn presented<'a>(&self, headers: &'a HeaderMap, query: Option<&str>) -> Presented<'a> {
        match &self.credential {
            Credential::Header(name) => match single_value(headers, name) {
                Err(()) => Presented::Malformed,
                Ok(None) => Presented::None,
                Ok(Some(v)) => match trim(v) {
                    [] => Presented::None,
                    key => Presented::Key(Cow::Borrowed(key)),
                },
            },
            Credential::Bearer => match single_value(headers, &http::header::AUTHORIZATION) {
                Err(()) => Presented::Malformed,
                Ok(None) => Presented::None,
                Ok(Some(v)) => match v.split_at_checked(7) {
                    Some((scheme, token)) if scheme.eq_ignore_ascii_case(b"bearer ") => {
                        match trim(token) {
                            [] => Presented::Malformed,
                            key => Presented::Key(Cow::Borrowed(key)),
                        }
                    }
                    _ => Presented::Malformed,
                },
            },
            Credential::Query(name) => {
                let mut found = None;
                for (key, value) in query_pairs(query.unwrap_or("")) {
                    if key == name.as_bytes() {
                        if found.is_some() {
                            return Presented::Malformed;
                        }
                        found = Some(value);
                    }
                }
                match found {
                    None => Presented::None,
                    Some(v) if v.is_empty() => Presented::None,
                    Some(v) => Presented::Key(Cow::Owned(v)),
                }
            }
        }
    }

    /// Keys per set, for the startup log and `check`.
    pub fn counts(&self) -> (usize, usize, usize) {
        let count = |set| self.entries.iter().filter(|e| e.set == set).count();
        (
            count(KeySet::Named),
            count(KeySet::Current),
            count(KeySet::Next),
        )
    }
}

enum Presented<'a> {
    Key(Cow<'a, [u8]>),
    None,
    Malformed,
}

/// The value of a header sent once; `Err` when it was sent more than once (which one would
/// count is ambiguous).
fn single_value<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a [u8]>, ()> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => Ok(Some(v.as_bytes())),
        (Some(_), Some(_)) => Err(()),
    }
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn valid_query_name(q: &str) -> bool {
    !q.is_empty()
        && q.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// `name=value` pairs of a query string, percent-decoded (`+` is a space).
fn query_pairs(query: &str) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k), percent_decode(v))
    })
}

/// The query string without the parameter `name` (however it was encoded); `None` when no
/// parameter is left.
pub fn strip_query_param(query: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|pair| {
            let k = pair.split_once('=').map_or(*pair, |(k, _)| k);
            percent_decode(k) != name.as_bytes()
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| {
                    std::str::from_utf8(h)
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                });
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// A random key for a policy's tags of matched keys, from the system's secure generator.
fn tag_key() -> Option<[u8; 16]> {
    use ring::rand::SecureRandom;
    let mut key = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut key).ok()?;
    Some(key)
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// `sha256:<hex>` of a key, as written in configs.
pub fn digest_string(key: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha256(key)))
}

fn parse_digest(text: &str) -> Result<[u8; 32], String> {
    let hex_part = text
        .trim()
        .strip_prefix("sha256:")
        .ok_or("a digest is written `sha256:` followed by 64 hex digits")?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out)
        .map_err(|_| "a digest is written `sha256:` followed by 64 hex digits".to_string())?;
    Ok(out)
}

/// A set's item: a digest, or a plain key long enough not to be guessed. The error never
/// holds the key.
fn key_digest(item: &str) -> Result<[u8; 32], String> {
    if item.starts_with("sha256:") {
        return parse_digest(item);
    }
    if item.chars().count() < MIN_KEY_LEN {
        return Err(format!(
            "a key is shorter than {MIN_KEY_LEN} characters; use a longer one (`palisade keys new`) or give its sha256: digest"
        ));
    }
    if item.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err("a key holds spaces or control characters".into());
    }
    Ok(sha256(item.as_bytes()))
}

fn words(digest: &[u8; 32]) -> [u64; 4] {
    let mut out = [0u64; 4];
    for (word, chunk) in out.iter_mut().zip(digest.chunks_exact(8)) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        *word = u64::from_le_bytes(bytes);
    }
    out
}

fn set_key_id(digest: &[u8; 32]) -> String {
    format!("key-{}", hex::encode(&digest[..6]))
}

/// Reads a set's source. An empty `env` value is an empty set (nothing being rotated in), but
/// a variable that is not set at all is an error, like every other missing secret.
fn resolve_set(source: &SecretRef, base: &Path) -> Result<String, String> {
    use crate::config::secret::SecretSource;
    if let SecretRef::Source(SecretSource::Env(name)) = source {
        return std::env::var(name)
            .map_err(|_| format!("environment variable `{name}` is not set"));
    }
    source.resolve(base).map(|s| s.expose().to_string())
}

/// The keys of a set: comma- or line-separated, blanks and `#` comments skipped.
fn split_keys(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(|line| match line.find('#') {
            Some(at) if line[..at].trim().is_empty() || line[..at].ends_with([' ', '\t']) => {
                &line[..at]
            }
            _ => line,
        })
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

fn parse_time(text: &str) -> Result<u64, String> {
    humantime::parse_rfc3339_weak(text.trim())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .ok_or_else(|| format!("`{text}` is not a time like \"2027-01-01T00:00:00Z\""))
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

/// A fresh key: 43 characters from a CSPRNG over 62 symbols (over 256 bits), after `prefix`.
pub fn new_key(prefix: &str) -> Result<String, String> {
    use ring::rand::SecureRandom;
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let rng = ring::rand::SystemRandom::new();
    let mut out = String::from(prefix);
    let mut buf = [0u8; 64];
    while out.len() < prefix.len() + 43 {
        rng.fill(&mut buf)
            .map_err(|_| "the system random source failed".to_string())?;
        // 248 = 4 * 62: rejecting the bytes above keeps every symbol equally likely.
        for b in buf.iter().filter(|b| **b < 248) {
            if out.len() == prefix.len() + 43 {
                break;
            }
            out.push(ALPHABET[usize::from(*b % 62)] as char);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "pk_test_aaaaaaaaaaaaaaaaaaaa";
    const KEY_B: &str = "pk_test_bbbbbbbbbbbbbbbbbbbb";

    fn compile(toml_text: &str) -> (Option<ApiKeyPolicy>, Vec<String>) {
        let cfg: ApiKeysConfig = toml::from_str(toml_text).unwrap();
        let mut diags = Diagnostics::default();
        let p = ApiKeyPolicy::compile("clients", &cfg, Path::new("."), &mut diags);
        let msgs = diags.list.iter().map(|d| d.reason.clone()).collect();
        (p, msgs)
    }

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn every_set_and_result_has_its_own_metric_slot() {
        let entry = |set| KeyEntry::new(&[0; 32], Arc::from("k"), set, Vec::new());
        let entries = [KeySet::Current, KeySet::Next, KeySet::Named].map(entry);
        let mut seen = std::collections::HashMap::new();
        let mut check = |o: AuthOutcome<'_>| {
            let labels = (o.entry().map_or("none", |e| e.set.label()), o.result());
            let slot = o.metric_slot();
            assert!(slot < 20, "{labels:?} -> {slot}");
            if let Some(other) = seen.insert(slot, labels) {
                panic!("{labels:?} and {other:?} share slot {slot}");
            }
        };
        check(AuthOutcome::Missing);
        check(AuthOutcome::Invalid);
        for e in &entries {
            check(AuthOutcome::Accepted(e));
            check(AuthOutcome::Expired(e));
            check(AuthOutcome::Forbidden(e));
        }
    }

    #[test]
    fn both_sets_and_digests_are_accepted() {
        let (p, msgs) = compile(&format!(
            "current = \"{KEY_A}\"\nnext = \"{}\"\n",
            digest_string(KEY_B.as_bytes())
        ));
        let p = p.unwrap_or_else(|| panic!("{msgs:?}"));
        let a = p.authenticate(&headers("x-api-key", KEY_A), None, &[], 0);
        assert!(matches!(a, AuthOutcome::Accepted(e) if e.set == KeySet::Current));
        let b = p.authenticate(&headers("x-api-key", KEY_B), None, &[], 0);
        assert!(matches!(b, AuthOutcome::Accepted(e) if e.set == KeySet::Next));
        let wrong = p.authenticate(
            &headers("x-api-key", "pk_test_cccccccccccccccccccc"),
            None,
            &[],
            0,
        );
        assert_eq!(wrong.result(), "invalid");
        assert_eq!(
            p.authenticate(&HeaderMap::new(), None, &[], 0).result(),
            "missing"
        );
    }

    #[test]
    fn a_key_keeps_its_id_when_promoted_from_next_to_current() {
        let (before, _) = compile(&format!("current = \"{KEY_A}\"\nnext = \"{KEY_B}\"\n"));
        let (after, _) = compile(&format!("current = \"{KEY_B}\"\n"));
        let id = |p: &ApiKeyPolicy| match p.authenticate(&headers("x-api-key", KEY_B), None, &[], 0)
        {
            AuthOutcome::Accepted(e) => e.id.to_string(),
            other => panic!("{}", other.result()),
        };
        assert_eq!(id(&before.unwrap()), id(&after.unwrap()));
    }

    #[test]
    fn short_plain_keys_are_refused_without_being_echoed() {
        let (p, msgs) = compile("current = \"short-key-123,\"\n");
        assert!(p.is_none());
        assert!(
            msgs.iter().any(|m| m.contains("shorter than 16")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter().all(|m| !m.contains("short-key-123")),
            "{msgs:?}"
        );
    }

    thread_local! {
        /// SHA-256 lookups made on this thread (the tests run one per thread).
        pub(super) static DIGESTS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    fn digests() -> u64 {
        DIGESTS.with(|n| n.get())
    }

    #[test]
    fn a_matched_key_is_remembered_by_its_tag_and_still_checked() {
        let (p, msgs) = compile(&format!(
            "[[keys]]\nid = \"ops\"\nhash = \"{}\"\nroles = [\"admin\"]\nexpires = \"2100-01-01T00:00:00Z\"\n",
            digest_string(KEY_A.as_bytes()),
        ));
        let p = p.unwrap_or_else(|| panic!("{msgs:?}"));
        let admin = vec!["admin".to_string()];
        let key_a = headers("x-api-key", KEY_A);
        let before = digests();
        assert_eq!(p.authenticate(&key_a, None, &admin, 0).result(), "ok");
        assert_eq!(digests(), before + 1, "a first match looks at the digests");
        for _ in 0..3 {
            assert_eq!(p.authenticate(&key_a, None, &admin, 0).result(), "ok");
        }
        assert_eq!(digests(), before + 1, "a remembered key needs no SHA-256");
        // Remembered, and still held to its roles and its expiry.
        let billing = vec!["billing".to_string()];
        assert_eq!(
            p.authenticate(&key_a, None, &billing, 0).result(),
            "forbidden"
        );
        let expired = parse_time("2100-01-01T00:00:00Z").unwrap();
        assert_eq!(
            p.authenticate(&key_a, None, &admin, expired).result(),
            "expired"
        );
        // A wrong key is never remembered: each try is looked up again.
        let wrong = headers("x-api-key", "pk_test_cccccccccccccccccccc");
        let before = digests();
        for _ in 0..2 {
            assert_eq!(p.authenticate(&wrong, None, &[], 0).result(), "invalid");
        }
        assert_eq!(digests(), before + 2);
        // The key with one byte changed is not taken for the remembered one.
        let near = headers("x-api-key", &format!("{}b", &KEY_A[..KEY_A.len() - 1]));
        assert_eq!(p.authenticate(&near, None, &[], 0).result(), "invalid");
    }

    #[test]
    fn a_key_remembered_by_one_policy_means_nothing_to_another() {
        let (a, _) = compile(&format!("current = \"{KEY_A}\"\n"));
        let a = a.unwrap();
        // The same config loaded again, as a reload does, with the key moved to `next`; and
        // a policy without it.
        let (reloaded, _) = compile(&format!("current = \"{KEY_B}\"\nnext = \"{KEY_A}\"\n"));
        let reloaded = reloaded.unwrap();
        let (other, _) = compile(&format!("current = \"{KEY_B}\"\n"));
        let other = other.unwrap();
        let key_a = headers("x-api-key", KEY_A);
        assert!(
            matches!(a.authenticate(&key_a, None, &[], 0), AuthOutcome::Accepted(e) if e.set == KeySet::Current)
        );
        assert_eq!(other.authenticate(&key_a, None, &[], 0).result(), "invalid");
        assert!(
            matches!(reloaded.authenticate(&key_a, None, &[], 0), AuthOutcome::Accepted(e) if e.set == KeySet::Next)
        );
        assert!(
            matches!(a.authenticate(&key_a, None, &[], 0), AuthOutcome::Accepted(e) if e.set == KeySet::Current)
        );
    }

    #[test]
    fn named_keys_have_roles_and_expire() {
        let (p, msgs) = compile(&format!(
            "[[keys]]\nid = \"ops\"\nhash = \"{}\"\nroles = [\"admin\"]\n\
             [[keys]]\nid = \"old\"\nhash = \"{}\"\nexpires = \"2020-01-01T00:00:00Z\"\n",
            digest_string(KEY_A.as_bytes()),
            digest_string(KEY_B.as_bytes()),
        ));
        let p = p.unwrap_or_else(|| panic!("{msgs:?}"));
        assert!(msgs.iter().any(|m| m.contains("has expired")), "{msgs:?}");
        let admin = vec!["admin".to_string()];
        let billing = vec!["billing".to_string()];
        let now = unix_now();
        assert_eq!(
            p.authenticate(&headers("x-api-key", KEY_A), None, &admin, now)
                .result(),
            "ok"
        );
        assert_eq!(
            p.authenticate(&headers("x-api-key", KEY_A), None, &billing, now)
                .result(),
            "forbidden"
        );
        assert_eq!(
            p.authenticate(&headers("x-api-key", KEY_B), None, &[], now)
                .result(),
            "expired"
        );
    }

    #[test]
    fn bearer_and_query_credentials_are_read() {
        let (p, _) = compile(&format!("bearer = true\ncurrent = \"{KEY_A}\"\n"));
        let p = p.unwrap();
        let bearer = headers("authorization", &format!("bearer {KEY_A}"));
        assert_eq!(p.authenticate(&bearer, None, &[], 0).result(), "ok");
        let basic = headers("authorization", "Basic dXNlcjpwYXNz");
        assert_eq!(p.authenticate(&basic, None, &[], 0).result(), "invalid");

        let (p, _) = compile(&format!("query = \"api_key\"\ncurrent = \"{KEY_A}\"\n"));
        let p = p.unwrap();
        let q = format!("a=1&api%5Fkey={KEY_A}&b=2");
        assert_eq!(
            p.authenticate(&HeaderMap::new(), Some(&q), &[], 0).result(),
            "ok"
        );
        let twice = format!("api_key={KEY_A}&api_key={KEY_B}");
        assert_eq!(
            p.authenticate(&HeaderMap::new(), Some(&twice), &[], 0)
                .result(),
            "invalid"
        );
        assert_eq!(strip_query_param(&q, "api_key").as_deref(), Some("a=1&b=2"));
        assert_eq!(
            strip_query_param(&format!("api_key={KEY_A}"), "api_key"),
            None
        );
    }

    #[test]
    fn key_files_allow_comments_and_blank_lines() {
        let keys: Vec<&str> = split_keys(
            "# rotated 2026-11\nkey-one-aaaaaaaaaaaa\n\n  key-two-bbbbbbbbbbbb # laptop\nx,y\n",
        )
        .collect();
        assert_eq!(
            keys,
            ["key-one-aaaaaaaaaaaa", "key-two-bbbbbbbbbbbb", "x", "y"]
        );
    }

    #[test]
    fn a_policy_needs_one_place_to_read_the_key_and_some_keys() {
        let (p, msgs) = compile(&format!(
            "header = \"X-Key\"\nbearer = true\ncurrent = \"{KEY_A}\"\n"
        ));
        assert!(p.is_none());
        assert!(msgs.iter().any(|m| m.contains("set one of")), "{msgs:?}");
        let (p, msgs) = compile("header = \"X-Key\"\n");
        assert!(p.is_none());
        assert!(msgs.iter().any(|m| m.contains("no keys")), "{msgs:?}");
    }

    #[test]
    fn new_keys_are_long_and_distinct() {
        let a = new_key("pk_live_").unwrap();
        let b = new_key("pk_live_").unwrap();
        assert_eq!(a.len(), 8 + 43);
        assert!(a.starts_with("pk_live_"));
        assert_ne!(a, b);
        assert!(key_digest(&a).is_ok());
    }
}
