//! Counting what a client has open at once: `max_in_flight` (requests per client IP on a
//! route, for long polls and SSE; over the cap answers 429 at once) and
//! `max_connections_per_ip`. A guard gives its place back however the request or connection
//! ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

const SHARDS: usize = 16;

/// Counts per client, sharded by address; only clients with something open are kept.
pub struct InFlightTable {
    shards: [Mutex<HashMap<IpAddr, u32>>; SHARDS],
}

impl Default for InFlightTable {
    fn default() -> Self {
        InFlightTable {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        }
    }
}

fn shard_of(ip: &IpAddr) -> usize {
    let last = match ip {
        IpAddr::V4(v4) => v4.octets()[3],
        IpAddr::V6(v6) => v6.octets()[15],
    };
    usize::from(last) % SHARDS
}

pub struct InFlightGuard {
    table: Arc<InFlightTable>,
    client: IpAddr,
}

impl InFlightTable {
    /// A place for `client`, or `None` when it already has `max` requests in flight.
    pub fn try_acquire(self: &Arc<Self>, client: IpAddr, max: u32) -> Option<InFlightGuard> {
        let mut counts = self.shards[shard_of(&client)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(client).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(InFlightGuard {
            table: self.clone(),
            client,
        })
    }

    #[cfg(test)]
    fn clients(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|c| c.len()).unwrap_or(0))
            .sum()
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let shard = &self.table.shards[shard_of(&self.client)];
        let mut counts = shard.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_per_client_and_places_come_back() {
        let t = Arc::new(InFlightTable::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let g1 = t.try_acquire(a, 2).unwrap();
        let g2 = t.try_acquire(a, 2).unwrap();
        assert!(t.try_acquire(a, 2).is_none());
        let g3 = t.try_acquire(b, 2).unwrap();
        drop(g1);
        let g4 = t.try_acquire(a, 2).unwrap();
        drop((g2, g3, g4));
        assert_eq!(t.clients(), 0, "idle clients are forgotten");
    }
}
