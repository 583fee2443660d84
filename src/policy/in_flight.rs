//! `max_in_flight`: concurrent requests per client IP on a route, for long polls and SSE
//! streams. Over the cap answers 429 at once. A guard held by the request gives its place back
//! however the request ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Counts per client; only clients with a request in flight are kept.
#[derive(Default)]
pub struct InFlightTable {
    counts: Mutex<HashMap<IpAddr, u32>>,
}

pub struct InFlightGuard {
    table: Arc<InFlightTable>,
    client: IpAddr,
}

impl InFlightTable {
    /// A place for `client`, or `None` when it already has `max` requests in flight.
    pub fn try_acquire(self: &Arc<Self>, client: IpAddr, max: u32) -> Option<InFlightGuard> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
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
        self.counts.lock().map(|c| c.len()).unwrap_or(0)
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut counts = self.table.counts.lock().unwrap_or_else(|p| p.into_inner());
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
