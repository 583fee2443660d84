//! The in-process limiter table: one GCRA state (a `u64`) per key, in sharded maps with a hard
//! bound on keys. Keys are 128-bit keyed hashes, so two clients never share a bucket by
//! accident (unlike a count-min sketch) and a client cannot aim collisions (random keys).
//!
//! A known key is decided with a compare-and-swap on its state, so threads deciding for the
//! same key (a `global` limit: every request) never block each other. Each thread remembers the
//! slots of the keys it decided last, so a hot key costs no lock at all; otherwise a shared
//! (read) lock finds the slot, and only a new key takes the shard's write lock. When a shard is
//! full, the least recently seen of a random sample of its keys is evicted (an approximate LRU,
//! as Redis does it), which keeps eviction O(1).

use std::cell::RefCell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use indexmap::IndexMap;
use siphasher::sip128::{Hasher128, SipHasher13};

use super::gcra::{self, Outcome, Rate};

const SHARDS: usize = 64;
/// Keys looked at to choose one to evict.
const EVICTION_SAMPLE: usize = 8;

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

struct Slot {
    /// The GCRA theoretical arrival time, in microseconds.
    tat: AtomicU64,
    /// When the key was last decided, for eviction.
    seen: AtomicU64,
    /// Set when the slot leaves its table: a thread that still remembers it looks again.
    evicted: AtomicBool,
}

impl Slot {
    fn new(tat: u64, now: u64) -> Arc<Slot> {
        Arc::new(Slot {
            tat: AtomicU64::new(tat),
            seen: AtomicU64::new(now),
            evicted: AtomicBool::new(false),
        })
    }
}

type Shard = RwLock<IndexMap<u128, Arc<Slot>, BuildHasherDefault<PreHashed>>>;

/// Per thread: the slots of the keys it decided last, by (table id, key).
const HOT_SLOTS: usize = 64;
type HotEntry = Option<(u64, u128, Arc<Slot>)>;

thread_local! {
    static HOT: RefCell<[HotEntry; HOT_SLOTS]> = const { RefCell::new([const { None }; HOT_SLOTS]) };
}

static TABLE_IDS: AtomicU64 = AtomicU64::new(1);

/// See [`LocalTable::key_writer`].
pub struct KeyWriter(SipHasher13);

impl KeyWriter {
    pub fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }

    /// One part of a key: its length (four bytes, little-endian), then its bytes, as a
    /// store's written-out key frames each part, so parts never run together.
    pub fn part(&mut self, bytes: &[u8]) {
        self.write(&(bytes.len() as u32).to_le_bytes());
        self.write(bytes);
    }

    pub fn finish(self) -> u128 {
        u128::from(self.0.finish128())
    }
}

pub struct LocalTable {
    /// Tells this table's entries apart in the per-thread memory (addresses can be reused).
    id: u64,
    rate: Rate,
    shards: Box<[Shard]>,
    per_shard: usize,
    /// SipHash-1-3 with 128 bits out, keyed at random: a client cannot aim its keys at one
    /// shard or slot.
    hasher: SipHasher13,
    evictions: AtomicU64,
}

impl LocalTable {
    pub fn new(rate: Rate, max_keys: usize) -> LocalTable {
        let shards = (0..SHARDS)
            .map(|_| RwLock::new(IndexMap::with_hasher(BuildHasherDefault::default())))
            .collect();
        LocalTable {
            id: TABLE_IDS.fetch_add(1, Ordering::Relaxed),
            rate,
            shards,
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            hasher: SipHasher13::new_with_keys(
                RandomState::new().hash_one(0u64),
                RandomState::new().hash_one(1u64),
            ),
            evictions: AtomicU64::new(0),
        }
    }

    /// The table's key for the given parts: each part's length (four bytes) and bytes, in
    /// order, so parts never run together.
    pub fn key<'a>(&self, parts: impl Iterator<Item = &'a [u8]>) -> u128 {
        let mut key = self.key_writer();
        for part in parts {
            key.part(part);
        }
        key.finish()
    }

    /// A key hashed from one run of bytes given in any pieces: the run of [`Self::key`]'s
    /// lengths and parts, given whole or as it is made, is the same key.
    pub fn key_writer(&self) -> KeyWriter {
        KeyWriter(self.hasher)
    }

    fn shard(&self, key: u128) -> &Shard {
        &self.shards[(key as usize) % SHARDS]
    }

    /// Decides and, when allowed, charges one request. `now` is in microseconds.
    pub fn check(&self, key: u128, now: u64) -> Outcome {
        let hot = (key as usize ^ self.id as usize) % HOT_SLOTS;
        let remembered = HOT.with(|slots| {
            let slots = slots.borrow();
            match &slots[hot] {
                Some((id, k, slot))
                    if *id == self.id && *k == key && !slot.evicted.load(Ordering::Acquire) =>
                {
                    Some(self.decide(slot, now))
                }
                _ => None,
            }
        });
        if let Some(outcome) = remembered {
            return outcome;
        }
        let (slot, outcome) = self.find_or_insert(key, now);
        HOT.with(|slots| slots.borrow_mut()[hot] = Some((self.id, key, slot)));
        outcome
    }

    fn find_or_insert(&self, key: u128, now: u64) -> (Arc<Slot>, Outcome) {
        let shard = self.shard(key);
        {
            let map = shard.read().unwrap_or_else(|p| p.into_inner());
            if let Some(slot) = map.get(&key) {
                return (slot.clone(), self.decide(slot, now));
            }
        }
        let mut map = shard.write().unwrap_or_else(|p| p.into_inner());
        // Another thread may have added the key between the two locks.
        if let Some(slot) = map.get(&key) {
            return (slot.clone(), self.decide(slot, now));
        }
        let (outcome, tat) = gcra::decide(self.rate, None, now);
        if map.len() >= self.per_shard {
            evict_one(&mut map);
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        let slot = Slot::new(tat, now);
        map.insert(key, slot.clone());
        (slot, outcome)
    }

    fn decide(&self, slot: &Slot, now: u64) -> Outcome {
        // Seen on every decision, refused ones included: a client being refused is not idle,
        // and evicting it would hand it a fresh bucket.
        if slot.seen.load(Ordering::Relaxed) != now {
            slot.seen.store(now, Ordering::Relaxed);
        }
        let mut current = slot.tat.load(Ordering::Acquire);
        loop {
            let (outcome, tat) = gcra::decide(self.rate, Some(current), now);
            if !outcome.allowed {
                return outcome;
            }
            match slot
                .tat
                .compare_exchange_weak(current, tat, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return outcome,
                Err(actual) => current = actual,
            }
        }
    }

    /// Gives back one request this table allowed (a later policy refused it).
    pub fn refund(&self, key: u128, now: u64) {
        let map = self.shard(key).read().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = map.get(&key) {
            let _ = slot
                .tat
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                    Some(gcra::refund(self.rate, tat, now))
                });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }
}

/// Evicts the least recently seen of a few keys picked at random.
fn evict_one(map: &mut IndexMap<u128, Arc<Slot>, BuildHasherDefault<PreHashed>>) {
    let len = map.len();
    if len == 0 {
        return;
    }
    let oldest = (0..EVICTION_SAMPLE.min(len))
        .map(|_| fastrand::usize(..len))
        .min_by_key(|i| {
            map.get_index(*i)
                .map_or(u64::MAX, |(_, slot)| slot.seen.load(Ordering::Relaxed))
        });
    if let Some(index) = oldest {
        if let Some((_, slot)) = map.swap_remove_index(index) {
            slot.evicted.store(true, Ordering::Release);
        }
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
        assert_eq!(t.evictions() as usize + t.len(), 10_000);
    }

    #[test]
    fn eviction_prefers_keys_not_seen_lately() {
        let t = LocalTable::new(Rate::new(1000, 60 * SEC, 1000), SHARDS * 64);
        let hot: Vec<u128> = (0..32u32)
            .map(|i| t.key([&i.to_le_bytes()[..]].into_iter()))
            .collect();
        for round in 0..200u64 {
            for k in &hot {
                t.check(*k, round * 10);
            }
            for j in 0..200u32 {
                let cold =
                    t.key([&(1_000_000 + round as u32 * 1000 + j).to_le_bytes()[..]].into_iter());
                t.check(cold, round * 10 + 1);
            }
        }
        let kept = hot
            .iter()
            .filter(|k| {
                let map = t.shard(**k).read().unwrap();
                map.contains_key(*k)
            })
            .count();
        assert!(
            kept >= 28,
            "recently seen keys should survive churn: {kept}/32 kept"
        );
    }

    #[test]
    fn two_threads_on_one_key_never_exceed_the_burst() {
        let t = std::sync::Arc::new(LocalTable::new(Rate::new(1000, 60 * SEC, 1000), 10));
        let k = key(&t, "shared");
        let allowed: u32 = (0..2)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    (0..5000).filter(|_| t.check(k, 0).allowed).count() as u32
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(
            allowed, 1000,
            "exactly the burst, however the threads interleave"
        );
    }
}
