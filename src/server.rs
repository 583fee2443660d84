//! Loading a config into a runtime, and starting Pingora with it: the gateway listeners, the
//! admin listener and the background work.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use pingora_proxy::HttpProxy;

use crate::admin::Admin;
use crate::background::{CountConnections, Drain, HealthChecks};
use crate::config::diagnostics::Severity;
use crate::config::{self, Diagnostics};
use crate::log::AccessLog;
use crate::metrics::Metrics;
use crate::policy::in_flight::InFlightTable;
use crate::proxy::{Gateway, Shared};
use crate::reload::{self, Reloader};
use crate::runtime::Runtime;
use crate::state::State;
use crate::tls::{self, SniResolver};
use crate::version;

/// `EX_CONFIG` from sysexits.h: the config is invalid. Nothing was bound.
pub const EXIT_CONFIG: i32 = 78;

pub struct Checked {
    pub runtime: Runtime,
    /// The config as written, for `palisade audit`.
    pub config: config::Config,
    /// Rendered warnings, `FILE:LINE:COL: warning: key: reason`.
    pub warnings: Vec<String>,
}

/// Loads, validates and compiles a config. On failure, every error rendered with its place.
pub fn load_runtime(file: &Path, state: &State) -> Result<Checked, Vec<String>> {
    let mut diags = Diagnostics::default();
    let loaded = config::load(file, &mut diags).map_err(|e| vec![e])?;
    let runtime = if diags.has_errors() {
        None
    } else {
        Runtime::compile(&loaded.config, &loaded.base_dir, state, &mut diags)
    };
    let warnings = loaded.source.render_all(diags.warnings());
    match runtime {
        Some(runtime) if !diags.has_errors() => Ok(Checked {
            runtime,
            config: loaded.config,
            warnings,
        }),
        _ => {
            let errors = loaded
                .source
                .render_all(diags.list.iter().filter(|d| d.severity == Severity::Error));
            Err(errors.into_iter().chain(warnings).collect())
        }
    }
}

/// Starts the gateway and never returns (the process exits on shutdown).
pub fn run(file: &Path, upgrade: bool, pid_file: Option<&Path>) -> i32 {
    let state = Arc::new(State::default());
    let checked = match load_runtime(file, &state) {
        Ok(checked) => {
            state.commit();
            checked
        }
        Err(lines) => {
            for line in lines {
                eprintln!("{line}");
            }
            eprintln!("palisade: {} is invalid; not starting", file.display());
            return EXIT_CONFIG;
        }
    };
    for warning in &checked.warnings {
        log::warn!("{warning}");
    }
    let runtime = checked.runtime;
    if let Err(e) = check_ports_free(&runtime, upgrade) {
        eprintln!("palisade: {e}");
        return 1;
    }
    if let Some(pid_file) = pid_file {
        if let Err(e) = std::fs::write(pid_file, format!("{}\n", std::process::id())) {
            eprintln!("palisade: cannot write {}: {e}", pid_file.display());
            return 1;
        }
    }
    if let Some(store) = &runtime.tls {
        tls::install_provider(store.min_version);
    }

    let metrics = match Metrics::new(version::VERSION, version::GIT_SHA) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("palisade: cannot register metrics: {e}");
            return 1;
        }
    };
    let connections = metrics.active_connections.clone();
    metrics.config_last_reload_success.set(reload::unix_now());
    let idle = runtime.timeouts.idle;
    let max_requests = runtime.max_requests_per_connection;
    let threads = runtime.threads;
    let grace = runtime.shutdown_grace;
    let listeners = (
        runtime.listeners.plain.clone(),
        runtime.listeners.tls.clone(),
        runtime.listeners.admin,
    );
    let cert_store = runtime.tls.clone();
    let summary = runtime.summary();
    let shared = Arc::new(Shared {
        runtime: ArcSwap::from_pointee(runtime),
        metrics,
        access_log: AccessLog::to_stdout(),
    });

    let conf = ServerConf {
        threads,
        grace_period_seconds: Some(grace.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let mut proxy = HttpProxy::new(
        Gateway {
            shared: shared.clone(),
        },
        server.configuration.clone(),
    );
    let mut options = HttpServerOptions::default();
    options.h2_idle_timeout = Some(idle);
    options.keepalive_request_limit = Some(max_requests);
    proxy.server_options = Some(options);
    proxy.handle_init_modules();
    let app = CountConnections {
        inner: Arc::new(proxy),
        gauge: connections,
        shared: shared.clone(),
        per_ip: Arc::new(InFlightTable::default()),
    };
    let mut gateway = Service::new("palisade".to_string(), app);
    let (plain, tls_addrs, admin_addr) = listeners;
    for addr in &plain {
        gateway.add_tcp(&addr.to_string());
    }
    let resolver = cert_store.map(|store| Arc::new(SniResolver::new(store)));
    if let Some(resolver) = &resolver {
        for addr in &tls_addrs {
            // With a resolver set, Pingora ignores the certificate paths.
            let mut settings = match TlsSettings::intermediate("", "") {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("palisade: cannot set up TLS: {e}");
                    return 1;
                }
            };
            settings.set_cert_resolver(resolver.clone());
            settings.enable_h2();
            gateway.add_tls_with_settings(&addr.to_string(), None, settings);
        }
    }

    let mut admin = Service::new(
        "admin".to_string(),
        Admin {
            shared: shared.clone(),
            started: Instant::now(),
        },
    );
    admin.add_tcp(&admin_addr.to_string());

    server.add_service(gateway);
    server.add_service(admin);
    server.add_service(background_service(
        "health checks",
        HealthChecks {
            shared: shared.clone(),
        },
    ));
    server.add_service(background_service(
        "reload",
        Reloader {
            file: file.to_path_buf(),
            shared: shared.clone(),
            state,
            resolver,
        },
    ));
    server.add_service(background_service("drain", Drain { shared, grace }));

    log::info!(
        "palisade {} ({}) serving {summary}: http {:?}, https {:?}, admin {admin_addr}",
        version::VERSION,
        version::GIT_SHA,
        plain,
        tls_addrs
    );
    server.run_forever()
}

/// A clear error for a port in use, before Pingora would panic on it. An upgrade takes the old
/// process's sockets, so it skips this.
fn check_ports_free(runtime: &Runtime, upgrade: bool) -> Result<(), String> {
    if upgrade {
        return Ok(());
    }
    let l = &runtime.listeners;
    for addr in l
        .plain
        .iter()
        .chain(&l.tls)
        .chain(std::iter::once(&l.admin))
    {
        std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    }
    Ok(())
}
