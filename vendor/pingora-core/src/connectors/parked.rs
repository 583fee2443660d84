// Palisade: this file is not in pingora-core 0.9.1 (see PATCHES.md, patch 9).

//! A per-thread stack of just-released upstream connections.
//!
//! Releasing a connection into the shared pool costs, per request: an `Arc<Mutex>` around the
//! stream, the pool's locks and LRU, two channels, a spawned task that watches the idle
//! connection (with a timer), and on reuse a wake-up of that task and a wait for it to let go.
//! Under load a released connection is taken again within milliseconds, by the same thread
//! (Palisade's peers carry a per-thread group key), so all of that buys nothing.
//!
//! A connection released on a thread of a single-threaded runtime is parked here instead, and
//! the next request on that thread for the same peer takes it back with no lock, task or
//! channel. It is still checked before reuse exactly as a pooled one is (its address, and a
//! read that finds it neither closed nor holding unexpected data). A connection parked for
//! [`PARK_FOR`] is moved into the shared pool, whose task watches it as before (idle timeout,
//! the upstream closing it, the pool's size): once the load stops, idle connections are
//! watched as upstream Pingora watches them, within about twice [`PARK_FOR`].

use super::{pool_put, test_reusable_stream, StreamPool};
use crate::protocols::Stream;
use std::cell::RefCell;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::{Handle, RuntimeFlavor};

/// How long a connection stays parked before it moves into the shared pool.
pub(super) const PARK_FOR: Duration = Duration::from_millis(500);

/// The most connections a thread parks per connector; more go to the shared pool at once.
const MAX_PARKED: usize = 256;

struct Parked {
    key: u64,
    stream: Stream,
    at: Instant,
    idle_timeout: Option<Duration>,
}

/// One connector's parked connections on one thread.
struct Slot {
    /// The connector's pool, by address: which connector the slot belongs to (the slot holds
    /// a clone of the `Arc`, so the address cannot be reused by another pool).
    owner: usize,
    pool: Arc<StreamPool>,
    unexpected_data: Arc<AtomicU64>,
    cap: usize,
    parked: Vec<Parked>,
    /// Whether this thread's sweeper task for the slot is running.
    sweeping: bool,
}

thread_local! {
    /// `None` on a thread that is not a single-threaded runtime's: tasks there may move between
    /// threads, and the sweeper with them.
    static SLOTS: RefCell<Option<Vec<Slot>>> = RefCell::new(
        Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::CurrentThread)
            .then(Vec::new),
    );
}

fn owner_of(pool: &Arc<StreamPool>) -> usize {
    Arc::as_ptr(pool) as usize
}

/// Parks `stream` on this thread; gives it back when it cannot be parked (not a
/// single-threaded runtime, or the slot is full).
pub(super) fn park(
    pool: &Arc<StreamPool>,
    unexpected_data: &Arc<AtomicU64>,
    pool_size: usize,
    stream: Stream,
    key: u64,
    idle_timeout: Option<Duration>,
) -> Result<(), Stream> {
    let owner = owner_of(pool);
    SLOTS.with(|slots| {
        let mut slots = slots.borrow_mut();
        let Some(slots) = slots.as_mut() else {
            return Err(stream);
        };
        let index = match slots.iter().position(|s| s.owner == owner) {
            Some(index) => index,
            None => {
                slots.push(Slot {
                    owner,
                    pool: pool.clone(),
                    unexpected_data: unexpected_data.clone(),
                    // Never more parked than the pool itself would keep.
                    cap: pool_size.min(MAX_PARKED),
                    parked: Vec::new(),
                    sweeping: false,
                });
                slots.len() - 1
            }
        };
        let slot = &mut slots[index];
        if slot.parked.len() >= slot.cap {
            return Err(stream);
        }
        slot.parked.push(Parked {
            key,
            stream,
            at: Instant::now(),
            idle_timeout,
        });
        if !slot.sweeping {
            slot.sweeping = true;
            tokio::spawn(sweep(owner));
        }
        Ok(())
    })
}

/// The most recently parked connection for `key` on this thread that is still usable, if any.
/// The ones found closed, holding data or past their idle timeout on the way are dropped.
pub(super) fn take(
    pool: &Arc<StreamPool>,
    unexpected_data: &AtomicU64,
    key: u64,
) -> Option<Stream> {
    let owner = owner_of(pool);
    loop {
        let mut parked = SLOTS.with(|slots| {
            let mut slots = slots.borrow_mut();
            let slot = slots.as_mut()?.iter_mut().find(|s| s.owner == owner)?;
            let index = slot.parked.iter().rposition(|p| p.key == key)?;
            Some(slot.parked.remove(index))
        })?;
        if parked
            .idle_timeout
            .is_some_and(|timeout| parked.at.elapsed() >= timeout)
        {
            continue;
        }
        if test_reusable_stream(&mut parked.stream, unexpected_data) {
            return Some(parked.stream);
        }
    }
}

/// Every [`PARK_FOR`], moves the connections parked that long into the shared pool; ends when
/// none is left parked.
async fn sweep(owner: usize) {
    loop {
        tokio::time::sleep(PARK_FOR).await;
        let stale = SLOTS.with(|slots| {
            let mut slots = slots.borrow_mut();
            let slot = slots.as_mut()?.iter_mut().find(|s| s.owner == owner)?;
            // Oldest first: the ones parked long enough are a prefix.
            let now = Instant::now();
            let n = slot
                .parked
                .partition_point(|p| now.duration_since(p.at) >= PARK_FOR);
            let stale: Vec<Parked> = slot.parked.drain(..n).collect();
            let done = slot.parked.is_empty();
            if done {
                slot.sweeping = false;
            }
            Some((stale, slot.pool.clone(), slot.unexpected_data.clone(), done))
        });
        let Some((stale, pool, unexpected_data, done)) = stale else {
            return;
        };
        for mut parked in stale {
            if test_reusable_stream(&mut parked.stream, &unexpected_data) {
                pool_put(&pool, None, parked.stream, parked.key, parked.idle_timeout);
            }
        }
        if done {
            return;
        }
    }
}
