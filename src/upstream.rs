//! Upstream pools: round robin over servers, passive health (a server that fails `failures`
//! connects in a row rests for `rest`), and active HTTP checks. Health lives in a registry that
//! outlives config reloads, so a reload does not forget that a server is down.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use pingora_core::upstreams::peer::HttpPeer;

pub use crate::clock::now_ms;
use crate::config::diagnostics::Diagnostics;
use crate::config::{KeyPath, UpstreamConfig};
use crate::log::LogName;

/// The health of one server, shared by every config snapshot that names it.
#[derive(Debug)]
pub struct ServerHealth {
    consecutive_failures: AtomicU32,
    resting_until_ms: AtomicU64,
    /// The active check's verdict; true until a check says otherwise.
    active_up: AtomicBool,
    active_streak: AtomicU32,
}

impl Default for ServerHealth {
    fn default() -> Self {
        ServerHealth {
            consecutive_failures: AtomicU32::new(0),
            resting_until_ms: AtomicU64::new(0),
            active_up: AtomicBool::new(true),
            active_streak: AtomicU32::new(0),
        }
    }
}

impl ServerHealth {
    pub fn is_available(&self, now: u64) -> bool {
        self.active_up.load(Ordering::Relaxed)
            && self.resting_until_ms.load(Ordering::Relaxed) <= now
    }

    pub fn record_connect_success(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
    }

    /// Returns true when this failure sent the server to rest.
    pub fn record_connect_failure(&self, failures: u32, rest: Duration, now: u64) -> bool {
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= failures {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            self.resting_until_ms
                .store(now + rest.as_millis() as u64, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Feeds one active check result; flips the verdict after enough of the same in a row.
    pub fn record_check(&self, ok: bool, healthy_after: u32, unhealthy_after: u32) {
        let up = self.active_up.load(Ordering::Relaxed);
        if ok == up {
            self.active_streak.store(0, Ordering::Relaxed);
            return;
        }
        let streak = self.active_streak.fetch_add(1, Ordering::Relaxed) + 1;
        let needed = if ok { healthy_after } else { unhealthy_after };
        if streak >= needed {
            self.active_up.store(ok, Ordering::Relaxed);
            self.active_streak.store(0, Ordering::Relaxed);
            if ok {
                // A server the checks brought back starts with a clean slate.
                self.resting_until_ms.store(0, Ordering::Relaxed);
            }
        }
    }
}

/// Server health by (upstream name, address): the state that survives a reload.
#[derive(Default)]
pub struct HealthRegistry {
    servers: Mutex<HashMap<(String, SocketAddr), Arc<ServerHealth>>>,
}

impl HealthRegistry {
    fn get(&self, upstream: &str, addr: SocketAddr) -> Arc<ServerHealth> {
        let mut servers = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        servers
            .entry((upstream.to_string(), addr))
            .or_default()
            .clone()
    }
}

pub struct Server {
    pub addr: SocketAddr,
    /// As written in the config; the metric label.
    pub label: String,
    pub health: Arc<ServerHealth>,
    peer: HttpPeer,
}

impl Server {
    /// The peer to proxy this request to. Its `group_key` is the calling thread's, so Pingora's
    /// pool hands a released upstream connection back only to requests on the thread that
    /// released it, and that thread also watches it while idle (the vendored pingora-core's
    /// `release_stream`): reuse never needs a wake-up from another thread.
    pub fn peer(&self) -> Box<HttpPeer> {
        // Cloned into the allocation, not cloned on the stack and copied there (672 bytes).
        let mut peer = Box::write(Box::new_uninit(), self.peer.clone());
        peer.group_key = thread_index() as u64;
        peer
    }
}

/// A number for the calling thread, fixed for its life: the pool key of [`Server::peer`],
/// the shard a thread's waiters use in [`crate::background::Closing`], and its metrics'
/// shard ([`crate::sharded::shard`]).
pub fn thread_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    INDEX.with(|index| *index)
}

pub struct ActiveCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_after: u32,
    pub unhealthy_after: u32,
}

pub struct Pool {
    pub name: String,
    /// The name as the access log writes it.
    pub log_name: LogName,
    pub servers: Vec<Server>,
    cursor: AtomicUsize,
    pub retries: usize,
    pub passive_failures: u32,
    pub passive_rest: Duration,
    pub check: Option<ActiveCheck>,
    /// When the active check last ran (ms, [`now_ms`]).
    pub last_check_ms: AtomicU64,
    /// `gateway_upstream_duration_seconds` of this pool in every metrics shard, resolved on
    /// first use (see [`crate::metrics::CounterSlots`] for why).
    pub duration: crate::sharded::LazyPerShard<prometheus::Histogram>,
}

impl Pool {
    /// The next available server in round-robin order at `now` ([`now_ms`]'s scale), or
    /// `None` when every one is down.
    pub fn select(&self, now: u64) -> Option<&Server> {
        let n = self.servers.len();
        // One server needs no turn: the cursor, a count every request thread writes, is left
        // alone (its cache line would move between cores on each request).
        let start = if n > 1 {
            self.cursor.fetch_add(1, Ordering::Relaxed)
        } else {
            0
        };
        (0..n)
            .map(|i| &self.servers[(start + i) % n])
            .find(|s| s.health.is_available(now))
    }

    pub fn server_for(&self, addr: &SocketAddr) -> Option<&Server> {
        self.servers.iter().find(|s| &s.addr == addr)
    }

    /// Ready when at least one server is available.
    pub fn is_ready(&self) -> bool {
        let now = now_ms();
        self.servers.iter().any(|s| s.health.is_available(now))
    }

    pub fn compile(
        name: &str,
        cfg: &UpstreamConfig,
        path: &KeyPath,
        base: &std::path::Path,
        registry: &HealthRegistry,
        diags: &mut Diagnostics,
    ) -> Option<Pool> {
        let errors_before = diags.error_count();
        if !crate::runtime::is_label_name(name) {
            diags.error(
                path.clone(),
                format!(
                    "upstream name `{name}` must be 1-64 letters, digits, `_` or `-` (it is a metrics label)"
                ),
            );
        }
        if cfg.servers.is_empty() {
            diags.error(
                path.key("servers"),
                "needs at least one server, e.g. [\"127.0.0.1:3000\"]",
            );
        }
        let ca = cfg.ca_file.as_ref().and_then(|file| {
            let full = base.join(file);
            match crate::tls::load_ca_file(&full) {
                Ok(ca) => Some(ca),
                Err(e) => {
                    diags.error(path.key("ca_file"), e);
                    None
                }
            }
        });
        if cfg.ca_file.is_some() && !cfg.tls {
            diags.error(path.key("ca_file"), "is only used with `tls = true`");
        }
        if cfg.retries > 10 {
            diags.error(path.key("retries"), "at most 10");
        }
        if cfg.passive_health.failures == 0 {
            diags.error(
                path.key("passive_health").key("failures"),
                "must be at least 1",
            );
        }
        let check = cfg.health_check.as_ref().map(|hc| {
            let hp = path.key("health_check");
            if !hc.path.starts_with('/') {
                diags.error(hp.key("path"), format!("`{}` must start with `/`", hc.path));
            }
            if hc.healthy_after == 0 {
                diags.error(hp.key("healthy_after"), "must be at least 1");
            }
            if hc.unhealthy_after == 0 {
                diags.error(hp.key("unhealthy_after"), "must be at least 1");
            }
            if hc.interval.0 < Duration::from_millis(100) {
                diags.error(hp.key("interval"), "must be at least 100ms");
            }
            ActiveCheck {
                path: hc.path.clone(),
                interval: hc.interval.0,
                timeout: hc.timeout.0,
                healthy_after: hc.healthy_after,
                unhealthy_after: hc.unhealthy_after,
            }
        });

        let mut servers = Vec::new();
        for (i, written) in cfg.servers.iter().enumerate() {
            let sp = path.key("servers").index(i);
            let addr = match resolve(written) {
                Ok(addr) => addr,
                Err(e) => {
                    diags.error(sp, e);
                    continue;
                }
            };
            let host = written
                .rsplit_once(':')
                .map_or(written.as_str(), |(h, _)| h);
            let sni = cfg
                .sni
                .clone()
                .unwrap_or_else(|| host.trim_matches(['[', ']']).to_string());
            let mut peer = HttpPeer::new(addr, cfg.tls, sni);
            peer.options.connection_timeout = Some(cfg.connect_timeout.0);
            peer.options.read_timeout = Some(cfg.read_timeout.0);
            peer.options.write_timeout = Some(cfg.read_timeout.0);
            peer.options.idle_timeout = Some(Duration::from_secs(60));
            if let Some(ca) = &ca {
                peer.options.ca = Some(ca.clone());
            }
            servers.push(Server {
                addr,
                label: written.clone(),
                health: registry.get(name, addr),
                peer,
            });
        }
        if diags.error_count() > errors_before {
            return None;
        }
        Some(Pool {
            name: name.to_string(),
            log_name: LogName::new(name),
            servers,
            cursor: AtomicUsize::new(0),
            retries: cfg.retries,
            passive_failures: cfg.passive_health.failures,
            passive_rest: cfg.passive_health.rest.0,
            check,
            last_check_ms: AtomicU64::new(0),
            duration: OnceLock::new(),
        })
    }
}

fn resolve(written: &str) -> Result<SocketAddr, String> {
    if !written.contains(':') {
        return Err(format!("`{written}` needs a port, e.g. \"{written}:80\""));
    }
    written
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{written}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{written}` resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_rests_after_the_configured_failures_in_a_row() {
        let h = ServerHealth::default();
        let rest = Duration::from_secs(10);
        assert!(!h.record_connect_failure(3, rest, 1000));
        h.record_connect_success();
        assert!(!h.record_connect_failure(3, rest, 1000));
        assert!(!h.record_connect_failure(3, rest, 1000));
        assert!(h.record_connect_failure(3, rest, 1000));
        assert!(!h.is_available(1000));
        assert!(!h.is_available(10_999));
        assert!(h.is_available(11_000));
    }

    #[test]
    fn active_checks_flip_only_after_a_streak() {
        let h = ServerHealth::default();
        h.record_check(false, 2, 3);
        h.record_check(false, 2, 3);
        assert!(h.is_available(0));
        h.record_check(false, 2, 3);
        assert!(!h.is_available(0));
        h.record_check(true, 2, 3);
        h.record_check(false, 2, 3);
        h.record_check(true, 2, 3);
        assert!(!h.is_available(0), "the streak must be consecutive");
        h.record_check(true, 2, 3);
        assert!(h.is_available(0));
    }
}
