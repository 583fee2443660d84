//! Hot reload on SIGHUP: the config, every secret and every certificate are read again,
//! validated and compiled, and the new runtime is swapped in whole. Requests in flight finish
//! on the snapshot they started with. An invalid config is refused whole (the old one keeps
//! serving), and so is one that changes what only a restart or an upgrade can change.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use crate::proxy::Shared;
use crate::runtime::Runtime;
use crate::server::load_runtime;
use crate::state::State;
use crate::tls::SniResolver;

pub struct Reloader {
    pub file: PathBuf,
    pub shared: Arc<Shared>,
    pub state: Arc<State>,
    pub resolver: Option<Arc<SniResolver>>,
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot listen for SIGHUP, reload is unavailable: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hangups.recv() => self.reload(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

impl Reloader {
    fn reload(&self) {
        let metrics = &self.shared.metrics;
        let result = load_runtime(&self.file, &self.state)
            .map_err(|lines| lines.join("\n"))
            .and_then(|checked| {
                for warning in &checked.warnings {
                    log::warn!("{warning}");
                }
                let current = self.shared.runtime.load();
                match needs_restart(&current, &checked.runtime) {
                    Some(what) => Err(format!(
                        "{}: {what} changed, which needs a restart or an upgrade (palisade run --upgrade); nothing was applied",
                        self.file.display()
                    )),
                    None => Ok(checked.runtime),
                }
            });
        match result {
            Ok(runtime) => {
                let summary = runtime.summary();
                if let (Some(resolver), Some(store)) = (&self.resolver, &runtime.tls) {
                    resolver.swap(store.clone());
                }
                self.shared.runtime.store(Arc::new(runtime));
                self.state.commit();
                // Logged before it is counted: whoever sees the count (an SRE's alert, the
                // tests) finds the line already written.
                log::info!("reloaded {}: {summary}", self.file.display());
                metrics.config_reloads.with_label_values(&["success"]).inc();
                metrics.config_last_reload_success.set(unix_now());
            }
            Err(e) => {
                self.state.discard();
                log::error!("reload refused, the running config stays:\n{e}");
                metrics.config_reloads.with_label_values(&["error"]).inc();
            }
        }
    }
}

/// What a reload cannot change: the sockets and the process-wide settings.
fn needs_restart(old: &Runtime, new: &Runtime) -> Option<&'static str> {
    let (a, b) = (&old.listeners, &new.listeners);
    if a.plain != b.plain || a.tls != b.tls {
        return Some("[server] listen or tls_listen");
    }
    if a.admin != b.admin {
        return Some("[admin] listen");
    }
    if old.threads != new.threads {
        return Some("[server] threads");
    }
    if old.upstream_keepalive != new.upstream_keepalive {
        return Some("[server] upstream_keepalive");
    }
    if old.shutdown_grace != new.shutdown_grace || old.timeouts.idle != new.timeouts.idle {
        return Some("[server] shutdown_grace or timeouts.idle");
    }
    if old.max_requests_per_connection != new.max_requests_per_connection {
        return Some("[server] max_requests_per_connection");
    }
    let min = |rt: &Runtime| rt.tls.as_ref().map(|t| t.min_version);
    if min(old) != min(new) {
        return Some("[tls] min_version");
    }
    None
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
