//! The config in force, as a request holds it.
//!
//! Every request thread used to clone the one shared `Arc<Runtime>` (and its route's
//! `Arc<Route>`) for each request: two atomic additions and two subtractions on a count
//! that every thread writes, so the count's cache line moved between cores on nearly every
//! request, and so did the route fields beside it that the router reads. Sampled with `perf`,
//! the instruction after such an atomic was among the hottest of `filter_request`. A
//! [`Snapshot`] is a thread's own handle on the config in force: cloning and dropping it
//! counts on an allocation only that thread touches, and it is made anew only when a reload
//! has put a new config in force. A [`RouteRef`] is a route of it, by position, and a
//! [`PoolRef`] that route's upstream pool.

use std::cell::RefCell;
use std::ops::Deref;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::runtime::{Route, Runtime};
use crate::upstream::Pool;

/// A request thread's handle on one config snapshot (see the module documentation).
#[derive(Clone)]
pub struct Snapshot(Arc<Held>);

/// What a thread's handles share: the count of this allocation is the one they touch.
struct Held {
    runtime: Arc<Runtime>,
}

impl Snapshot {
    /// The config in force: this thread's handle on it, which it made when it first saw that
    /// config. A thread keeps the handle of the last config it served until its next request,
    /// so an idle thread holds a replaced config a little longer (its memory only: every
    /// request asks which config is in force).
    pub fn current(in_force: &ArcSwap<Runtime>) -> Snapshot {
        thread_local! {
            static HELD: RefCell<Option<Snapshot>> = const { RefCell::new(None) };
        }
        let now = in_force.load();
        HELD.with_borrow_mut(|held| match held {
            Some(snapshot) if Arc::ptr_eq(&snapshot.0.runtime, &now) => snapshot.clone(),
            _ => {
                let snapshot = Snapshot::of(arc_swap::Guard::into_inner(now));
                *held = Some(snapshot.clone());
                snapshot
            }
        })
    }

    /// A handle of its own on `runtime` (for work off the request path).
    pub fn of(runtime: Arc<Runtime>) -> Snapshot {
        Snapshot(Arc::new(Held { runtime }))
    }

    /// The route at `index` of the router's routes, when there is one.
    pub fn route(&self, index: usize) -> Option<RouteRef> {
        self.router.routes().get(index)?;
        Some(RouteRef {
            snapshot: self.clone(),
            index,
        })
    }
}

impl Deref for Snapshot {
    type Target = Runtime;

    fn deref(&self) -> &Runtime {
        &self.0.runtime
    }
}

/// A route of a [`Snapshot`], by its position in the router: cloning it clones the
/// snapshot's handle, never the route's shared `Arc`.
#[derive(Clone)]
pub struct RouteRef {
    snapshot: Snapshot,
    index: usize,
}

impl Deref for RouteRef {
    type Target = Route;

    fn deref(&self) -> &Route {
        // In range: `Snapshot::route` made it only for an index its router has, and a
        // snapshot's router never changes.
        &self.snapshot.router.routes()[self.index]
    }
}

impl RouteRef {
    /// The route's upstream pool, held the same way.
    pub fn upstream(&self) -> PoolRef {
        PoolRef(self.clone())
    }
}

/// A route's upstream pool, held through the route (see [`RouteRef`]).
#[derive(Clone)]
pub struct PoolRef(RouteRef);

impl Deref for PoolRef {
    type Target = Pool;

    fn deref(&self) -> &Pool {
        &self.0.upstream
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;

    fn runtime(dir: &std::path::Path, name: &str) -> Arc<Runtime> {
        let file = dir.join(format!("{name}.toml"));
        let toml = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[upstreams.app]\nservers = [\"127.0.0.1:9\"]\n\n\
             [[routes]]\nname = \"{name}\"\npath = \"/\"\nupstream = \"app\"\n"
        );
        std::fs::write(&file, toml).expect("write the config");
        match crate::server::load_runtime(&file, &State::default()) {
            Ok(checked) => Arc::new(checked.runtime),
            Err(errors) => panic!("{errors:?}"),
        }
    }

    /// One handle per thread and config: a second request of the same config shares the
    /// first's; a reload gives the next request a handle on the new config.
    #[test]
    fn a_thread_keeps_one_handle_per_config_in_force() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let first = runtime(dir.path(), "first");
        let in_force = ArcSwap::new(first.clone());
        let a = Snapshot::current(&in_force);
        let b = Snapshot::current(&in_force);
        assert!(Arc::ptr_eq(&a.0, &b.0), "the same config gave two handles");
        assert!(Arc::ptr_eq(&a.0.runtime, &first), "not the config in force");

        let second = runtime(dir.path(), "second");
        in_force.store(second.clone());
        let c = Snapshot::current(&in_force);
        assert!(Arc::ptr_eq(&c.0.runtime, &second), "a reload was not seen");
        assert!(!Arc::ptr_eq(&a.0.runtime, &c.0.runtime));
        // The handle made before the reload still reads the config it was made for.
        assert_eq!(a.route(0).map(|r| r.name.clone()).as_deref(), Some("first"));
        assert_eq!(
            c.route(0).map(|r| r.name.clone()).as_deref(),
            Some("second")
        );

        // Another thread makes its own handle.
        let other = std::thread::scope(|s| {
            s.spawn(|| Snapshot::current(&in_force).0)
                .join()
                .expect("the thread")
        });
        assert!(!Arc::ptr_eq(&other, &c.0), "two threads shared one handle");
        assert!(
            Arc::ptr_eq(&other.runtime, &c.0.runtime),
            "the other thread's handle is not on the config in force"
        );
    }

    #[test]
    fn a_route_is_made_only_for_an_index_the_router_has() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let snapshot = Snapshot::of(runtime(dir.path(), "only"));
        assert!(snapshot.route(0).is_some());
        assert!(snapshot.route(1).is_none());
        let upstream = snapshot.route(0).map(|route| route.upstream());
        assert_eq!(
            upstream.map(|pool| pool.name.clone()).as_deref(),
            Some("app")
        );
    }
}
