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

/// Tables by name. A table is reused while its definition is unchanged, and replaced (its
/// state dropped) when the definition changes, since old counts would not fit the new shape.
pub struct Keep<T> {
    tables: Mutex<HashMap<String, (String, Arc<T>)>>,
}

impl<T> Default for Keep<T> {
    fn default() -> Self {
        Keep {
            tables: Mutex::new(HashMap::new()),
        }
    }
}

impl<T> Keep<T> {
    pub fn get(&self, name: &str, definition: String, make: impl FnOnce() -> T) -> Arc<T> {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        match tables.get(name) {
            Some((def, table)) if *def == definition => table.clone(),
            _ => {
                let table = Arc::new(make());
                tables.insert(name.to_string(), (definition, table.clone()));
                table
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_definition_keeps_its_table_and_a_changed_one_starts_fresh() {
        let keep: Keep<u32> = Keep::default();
        let first = keep.get("per_ip", "20/1m".into(), || 1);
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
}
