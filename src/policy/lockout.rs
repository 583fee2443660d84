//! `[lockouts.NAME]`: throttling after failures the upstream reports (a login answering 401).
//! After `after` failures within `within` from one client on a route, that client is blocked
//! there for `block`, doubling with each repeat up to `max_block`; a success resets it. A
//! blocked client gets 429 and the app never sees the request.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lru::LruCache;
use serde::Deserialize;

use crate::config::diagnostics::Diagnostics;
use crate::config::units::HumanDuration;
use crate::config::KeyPath;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockoutConfig {
    /// Upstream statuses that count as failures. Default `[401, 403]`.
    #[serde(default = "default_statuses")]
    pub statuses: Vec<u16>,
    /// Failures that trigger a block. Default 5.
    #[serde(default = "default_after")]
    pub after: u32,
    /// ... within this window. Default `"15m"`.
    #[serde(default = "default_within")]
    pub within: HumanDuration,
    /// The first block. Default `"1m"`.
    #[serde(default = "default_block")]
    pub block: HumanDuration,
    /// Blocks double up to this. Default `"1h"`.
    #[serde(default = "default_max_block")]
    pub max_block: HumanDuration,
    /// Clients tracked (least recently seen forgotten first). Default 100,000.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
}

fn default_statuses() -> Vec<u16> {
    vec![401, 403]
}
fn default_after() -> u32 {
    5
}
fn default_within() -> HumanDuration {
    HumanDuration::secs(15 * 60)
}
fn default_block() -> HumanDuration {
    HumanDuration::secs(60)
}
fn default_max_block() -> HumanDuration {
    HumanDuration::secs(3600)
}
fn default_max_keys() -> usize {
    100_000
}

#[derive(Default)]
struct Entry {
    /// Times of recent failures, oldest first, at most `after` of them.
    failures: VecDeque<u64>,
    blocked_until: u64,
    /// Blocks so far without a success in between: the next block is `block << strikes`.
    strikes: u32,
}

/// Per-client state, shared by every snapshot of the config that names the same policy.
pub struct LockoutTable {
    entries: Mutex<LruCache<u128, Entry>>,
    seeds: (RandomState, RandomState),
}

impl LockoutTable {
    pub fn new(max_keys: usize) -> LockoutTable {
        LockoutTable {
            entries: Mutex::new(LruCache::new(
                NonZeroUsize::new(max_keys).unwrap_or(NonZeroUsize::MIN),
            )),
            seeds: (RandomState::new(), RandomState::new()),
        }
    }

    fn key(&self, route: &str, client: IpAddr) -> u128 {
        let hash = |seed: &RandomState| {
            let mut h = seed.build_hasher();
            route.hash(&mut h);
            client.hash(&mut h);
            h.finish()
        };
        (u128::from(hash(&self.seeds.0)) << 64) | u128::from(hash(&self.seeds.1))
    }
}

pub struct LockoutPolicy {
    pub name: String,
    statuses: Vec<u16>,
    after: usize,
    within_us: u64,
    block_us: u64,
    max_block_us: u64,
    table: Arc<LockoutTable>,
    pub decision: String,
}

/// What a response did to a client's standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Nothing,
    Failure,
    /// This failure blocked the client for this many microseconds.
    Blocked(u64),
}

impl LockoutPolicy {
    pub fn compile(
        name: &str,
        cfg: &LockoutConfig,
        table: impl FnOnce(String, usize) -> Arc<LockoutTable>,
        diags: &mut Diagnostics,
    ) -> Option<LockoutPolicy> {
        let path = KeyPath::root().key("lockouts").key(name);
        let before = diags.error_count();
        if cfg.statuses.is_empty() || cfg.statuses.iter().any(|s| !(100..=599).contains(s)) {
            diags.error(
                path.key("statuses"),
                "needs HTTP statuses such as [401, 403]",
            );
        }
        if cfg.after == 0 {
            diags.error(path.key("after"), "must be at least 1");
        }
        if cfg.block.0 > cfg.max_block.0 {
            diags.error(path.key("max_block"), "must be at least `block`");
        }
        if cfg.block.0 < Duration::from_secs(1) {
            diags.error(path.key("block"), "must be at least 1s");
        }
        if cfg.max_keys == 0 {
            diags.error(path.key("max_keys"), "must be at least 1");
        }
        if diags.error_count() > before {
            return None;
        }
        let definition = format!("{cfg:?}");
        Some(LockoutPolicy {
            name: name.to_string(),
            statuses: cfg.statuses.clone(),
            after: cfg.after as usize,
            within_us: cfg.within.0.as_micros() as u64,
            block_us: cfg.block.0.as_micros() as u64,
            max_block_us: cfg.max_block.0.as_micros() as u64,
            table: table(definition, cfg.max_keys),
            decision: format!("locked_out:{name}"),
        })
    }

    /// Microseconds the client remains blocked on this route, if it is.
    pub fn blocked(&self, route: &str, client: IpAddr, now: u64) -> Option<u64> {
        let key = self.table.key(route, client);
        let entries = self.table.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .peek(&key)
            .filter(|e| e.blocked_until > now)
            .map(|e| e.blocked_until - now)
    }

    /// Feeds the upstream's answer to a request from `client`.
    pub fn record(&self, route: &str, client: IpAddr, status: u16, now: u64) -> Recorded {
        let key = self.table.key(route, client);
        let mut entries = self.table.entries.lock().unwrap_or_else(|p| p.into_inner());
        if (200..300).contains(&status) {
            entries.pop(&key);
            return Recorded::Nothing;
        }
        if !self.statuses.contains(&status) {
            return Recorded::Nothing;
        }
        let entry = entries.get_or_insert_mut(key, Entry::default);
        while entry
            .failures
            .front()
            .is_some_and(|t| now.saturating_sub(*t) > self.within_us)
        {
            entry.failures.pop_front();
        }
        entry.failures.push_back(now);
        if entry.failures.len() < self.after {
            return Recorded::Failure;
        }
        entry.failures.clear();
        let block = self
            .block_us
            .checked_shl(entry.strikes)
            .unwrap_or(u64::MAX)
            .min(self.max_block_us);
        entry.strikes = entry.strikes.saturating_add(1);
        entry.blocked_until = now + block;
        Recorded::Blocked(block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000;

    fn policy(after: u32, block: u64, max_block: u64) -> LockoutPolicy {
        let cfg = LockoutConfig {
            statuses: vec![401],
            after,
            within: HumanDuration::secs(60),
            block: HumanDuration::secs(block),
            max_block: HumanDuration::secs(max_block),
            max_keys: 100,
        };
        let mut d = Diagnostics::default();
        LockoutPolicy::compile("login", &cfg, |_, n| Arc::new(LockoutTable::new(n)), &mut d)
            .unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_after_the_failures_and_doubles_on_each_repeat_up_to_the_cap() {
        let p = policy(3, 60, 150);
        let c = ip("192.0.2.1");
        assert_eq!(p.record("login", c, 401, 0), Recorded::Failure);
        assert_eq!(p.record("login", c, 401, SEC), Recorded::Failure);
        assert_eq!(
            p.record("login", c, 401, 2 * SEC),
            Recorded::Blocked(60 * SEC)
        );
        assert_eq!(p.blocked("login", c, 2 * SEC), Some(60 * SEC));
        assert_eq!(p.blocked("login", c, 62 * SEC), None);
        for t in 0..2 {
            p.record("login", c, 401, 70 * SEC + t);
        }
        assert_eq!(
            p.record("login", c, 401, 71 * SEC),
            Recorded::Blocked(120 * SEC)
        );
        for t in 0..2 {
            p.record("login", c, 401, 300 * SEC + t);
        }
        assert_eq!(
            p.record("login", c, 401, 301 * SEC),
            Recorded::Blocked(150 * SEC),
            "capped at max_block"
        );
    }

    #[test]
    fn failures_outside_the_window_do_not_count_and_a_success_resets() {
        let p = policy(2, 60, 600);
        let c = ip("192.0.2.1");
        p.record("login", c, 401, 0);
        assert_eq!(
            p.record("login", c, 401, 61 * SEC),
            Recorded::Failure,
            "the first failure expired"
        );
        p.record("login", c, 200, 62 * SEC);
        assert_eq!(
            p.record("login", c, 401, 63 * SEC),
            Recorded::Failure,
            "the success cleared the count"
        );
        assert_eq!(p.record("login", c, 500, 63 * SEC), Recorded::Nothing);
    }

    #[test]
    fn clients_and_routes_are_separate() {
        let p = policy(1, 60, 60);
        p.record("login", ip("192.0.2.1"), 401, 0);
        assert!(p.blocked("login", ip("192.0.2.1"), 0).is_some());
        assert!(p.blocked("login", ip("192.0.2.2"), 0).is_none());
        assert!(p.blocked("signup", ip("192.0.2.1"), 0).is_none());
    }
}
