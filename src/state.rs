//! What outlives a config reload: upstream health, limiter buckets, lockouts and in-flight
//! counts, kept by name so a new runtime picks up what the old one knew.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::policy::in_flight::InFlightTable;
use crate::policy::lockout::LockoutTable;
use crate::policy::rate_limit::local::LocalTable;
use crate::upstream::HealthRegistry;

#[derive(Default)]
pub struct State {
    pub health: HealthRegistry,
    pub limiters: Keep<LocalTable>,
    pub lockouts: Keep<LockoutTable>,
    pub in_flight: Keep<InFlightTable>,
}

impl State {
    /// The config that used the tables handed out since the last commit is now live: keep them.
    pub fn commit(&self) {
        self.limiters.commit();
        self.lockouts.commit();
        self.in_flight.commit();
    }

    /// That config was refused: forget the tables made for it; the live ones stay.
    pub fn discard(&self) {
        self.limiters.discard();
        self.lockouts.discard();
        self.in_flight.discard();
    }
}

/// Tables by name. A table is reused while its definition is unchanged, and replaced (its
/// state dropped) when the definition changes, since old counts would not fit the new shape.
/// A replacement is only staged until the config that needs it goes live ([`Keep::commit`]),
/// so a refused reload leaves the running tables as they were.
pub struct Keep<T> {
    tables: Mutex<HashMap<String, (String, Arc<T>)>>,
    staged: Mutex<HashMap<String, (String, Arc<T>)>>,
}

impl<T> Default for Keep<T> {
    fn default() -> Self {
        Keep {
            tables: Mutex::new(HashMap::new()),
            staged: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> Keep<T> {
    pub fn get(&self, name: &str, definition: String, make: impl FnOnce() -> T) -> Arc<T> {
        let tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((def, table)) = tables.get(name) {
            if *def == definition {
                return table.clone();
            }
        }
        let mut staged = self.staged.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((def, table)) = staged.get(name) {
            if *def == definition {
                return table.clone();
            }
        }
        let table = Arc::new(make());
        staged.insert(name.to_string(), (definition, table.clone()));
        table
    }

    fn commit(&self) {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        let mut staged = self.staged.lock().unwrap_or_else(|p| p.into_inner());
        tables.extend(staged.drain());
    }

    fn discard(&self) {
        self.staged
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_definition_keeps_its_table_and_a_changed_one_starts_fresh() {
        let keep: Keep<u32> = Keep::default();
        let first = keep.get("per_ip", "20/1m".into(), || 1);
        keep.commit();
        let again = keep.get("per_ip", "20/1m".into(), || 2);
        assert!(
            Arc::ptr_eq(&first, &again),
            "a reload with the same policy keeps its buckets"
        );
        let changed = keep.get("per_ip", "50/1m".into(), || 3);
        assert_eq!(*changed, 3);
        let other = keep.get("global", "20/1m".into(), || 4);
        assert_eq!(*other, 4, "tables are kept by name");
    }

    #[test]
    fn a_refused_config_leaves_the_running_tables_alone() {
        let keep: Keep<u32> = Keep::default();
        let running = keep.get("per_ip", "2/1h".into(), || 1);
        keep.commit();
        let refused = keep.get("per_ip", "3/1h".into(), || 2);
        assert_eq!(*refused, 2);
        keep.discard();
        let back = keep.get("per_ip", "2/1h".into(), || 3);
        assert!(
            Arc::ptr_eq(&running, &back),
            "the running table survived the refused reload"
        );
    }
}
