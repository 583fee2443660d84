//! The in-process limiter table: one GCRA state (a `u64`) per key, in sharded LRU maps with a
//! hard bound on keys. Keys are 128-bit keyed hashes, so two clients never share a bucket by
//! accident (unlike a count-min sketch) and a client cannot aim collisions (random keys).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use lru::LruCache;

use super::gcra::{self, Outcome, Rate};

const SHARDS: usize = 64;

/// Keys are already keyed hashes: the maps use them as they are instead of hashing again.
#[derive(Default, Clone, Copy)]
pub struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = (n as u64) ^ ((n >> 64) as u64);
    }
}

type Shard = Mutex<LruCache<u128, u64, BuildHasherDefault<PreHashed>>>;

pub struct LocalTable {
    rate: Rate,
    shards: Box<[Shard]>,
    seeds: (RandomState, RandomState),
    evictions: AtomicU64,
}

impl LocalTable {
    pub fn new(rate: Rate, max_keys: usize) -> LocalTable {
        let per_shard =
            NonZeroUsize::new(max_keys.div_ceil(SHARDS).max(1)).unwrap_or(NonZeroUsize::MIN);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(LruCache::with_hasher(
                    per_shard,
                    BuildHasherDefault::default(),
                ))
            })
            .collect();
        LocalTable {
            rate,
            shards,
            seeds: (RandomState::new(), RandomState::new()),
            evictions: AtomicU64::new(0),
        }
    }

    /// The table's key for the given parts (hashed in order, with a separator).
    pub fn key<'a>(&self, parts: impl Iterator<Item = &'a [u8]> + Clone) -> u128 {
        let hash = |seed: &RandomState| {
            let mut h = seed.build_hasher();
            for part in parts.clone() {
                part.hash(&mut h);
            }
            h.finish()
        };
        (u128::from(hash(&self.seeds.0)) << 64) | u128::from(hash(&self.seeds.1))
    }

    fn shard(&self, key: u128) -> &Shard {
        &self.shards[(key as usize) % SHARDS]
    }

    /// Decides and, when allowed, charges one request. `now` is in microseconds.
    pub fn check(&self, key: u128, now: u64) -> Outcome {
        let mut shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        let stored = shard.get(&key).copied();
        let (outcome, tat) = gcra::decide(self.rate, stored, now);
        if outcome.allowed {
            if let Some((evicted, _)) = shard.push(key, tat) {
                if evicted != key {
                    self.evictions.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        outcome
    }

    /// Gives back one request this table allowed (a later policy refused it).
    pub fn refund(&self, key: u128, now: u64) {
        let mut shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tat) = shard.peek_mut(&key) {
            *tat = gcra::refund(self.rate, *tat, now);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000;

    fn key(t: &LocalTable, s: &str) -> u128 {
        t.key([s.as_bytes()].into_iter())
    }

    #[test]
    fn keys_are_limited_separately_and_exactly() {
        let t = LocalTable::new(Rate::new(3, 60 * SEC, 3), 1000);
        let (a, b) = (key(&t, "10.0.0.1"), key(&t, "10.0.0.2"));
        for _ in 0..3 {
            assert!(t.check(a, 0).allowed);
        }
        assert!(!t.check(a, 0).allowed);
        for _ in 0..3 {
            assert!(t.check(b, 0).allowed, "another key has its own bucket");
        }
    }

    #[test]
    fn compound_parts_do_not_run_together() {
        let t = LocalTable::new(Rate::new(1, SEC, 1), 10);
        let ab_c = t.key([&b"ab"[..], b"c"].into_iter());
        let a_bc = t.key([&b"a"[..], b"bc"].into_iter());
        assert_ne!(ab_c, a_bc);
    }

    #[test]
    fn the_table_is_bounded_and_counts_evictions() {
        let t = LocalTable::new(Rate::new(1, 60 * SEC, 1), 640);
        for i in 0..10_000u32 {
            t.check(t.key([&i.to_le_bytes()[..]].into_iter()), 0);
        }
        assert!(t.len() <= 640, "{}", t.len());
        assert!(t.evictions() >= 10_000 - 640);
    }
}
