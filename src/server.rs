//! Loading a config into a runtime, and starting Pingora with it: the gateway listeners, the
//! admin listener and the background work.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
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

/// Where the running gateway hands its listening sockets to a new process started with
/// `--upgrade`: the path given, else beside the pid file (`palisade.pid` gives
/// `palisade.upgrade.sock`), else in the temporary directory.
pub fn upgrade_sock_path(explicit: Option<PathBuf>, pid_file: Option<&Path>) -> PathBuf {
    match (explicit, pid_file) {
        (Some(path), _) => path,
        (None, Some(pid_file)) => pid_file.with_extension("upgrade.sock"),
        (None, None) => std::env::temp_dir().join("palisade.upgrade.sock"),
    }
}

/// Starts the gateway and never returns (the process exits on shutdown).
///
/// With `upgrade`, the listening sockets are taken from the running gateway over `upgrade_sock`
/// (it sends them on SIGQUIT, then drains and exits); the pid file is written once they are ours.
pub fn run(file: &Path, upgrade: bool, pid_file: Option<&Path>, upgrade_sock: &Path) -> i32 {
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
    if let Err(e) = check_upgrade_sock(upgrade_sock, upgrade) {
        eprintln!("palisade: {e}");
        return 1;
    }
    if let Some(pid_file) = pid_file {
        // Until an upgrade holds the sockets, the pid file keeps naming the running gateway.
        let written = if upgrade && pid_file.exists() {
            std::fs::OpenOptions::new()
                .append(true)
                .open(pid_file)
                .map(drop)
        } else if upgrade {
            Ok(())
        } else {
            write_pid_file(pid_file)
        };
        if let Err(e) = written {
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
    let drain_connections = connections.clone();
    metrics.config_last_reload_success.set(reload::unix_now());
    let idle = runtime.timeouts.idle;
    let max_requests = runtime.max_requests_per_connection;
    let threads = runtime.threads;
    let upstream_keepalive = runtime.upstream_keepalive;
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
        // One single-threaded runtime per core: a request stays on the thread that accepted
        // it, with no cross-thread wake-ups (work stealing costs more than it balances for a
        // proxy whose requests are all alike).
        work_stealing: false,
        upstream_keepalive_pool_size: upstream_keepalive,
        upgrade_sock: upgrade_sock.to_string_lossy().into_owned(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    if upgrade {
        log::info!(
            "waiting for the running gateway's sockets on {}: send it SIGQUIT now",
            upgrade_sock.display()
        );
    }
    // With --upgrade, this waits (about 6 s at most) for the old process to send its listening
    // sockets, or exits with status 1.
    server.bootstrap();
    if let (true, Some(pid_file)) = (upgrade, pid_file) {
        match write_pid_file(pid_file) {
            Ok(()) => log::info!("took over the listening sockets"),
            // The sockets are ours and the old process is draining: keep serving.
            Err(e) => log::error!("cannot write {}: {e}", pid_file.display()),
        }
    }

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
        bad_head: crate::background::bad_head_answer(shared.clone()),
        closing: Arc::default(),
    };
    let mut gateway = Service::new("palisade".to_string(), app);
    let (plain, tls_addrs, admin_addr) = listeners;
    for addr in &plain {
        gateway
            .add_listener(ListenerConfig::tcp(addr.to_string()).l4_buffer(client_buffers(false)));
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
            gateway.add_listener(
                ListenerConfig::tcp(addr.to_string())
                    .tls(settings)
                    .l4_buffer(client_buffers(true)),
            );
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
    server.add_service(background_service(
        "drain",
        Drain {
            shared,
            grace,
            connections: drain_connections,
        },
    ));

    log::info!(
        "palisade {} ({}) serving {summary}: http {:?}, https {:?}, admin {admin_addr}",
        version::VERSION,
        version::GIT_SHA,
        plain,
        tls_addrs
    );
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals {
            upgrade_sock: upgrade_sock.to_path_buf(),
        }),
    });
    std::process::exit(0)
}

fn write_pid_file(pid_file: &Path) -> std::io::Result<()> {
    std::fs::write(pid_file, format!("{}\n", std::process::id()))
}

/// A unix socket path holds at most 107 bytes; Pingora would only find out mid-upgrade.
fn check_upgrade_sock(path: &Path, upgrade: bool) -> Result<(), String> {
    if path.as_os_str().len() > 107 {
        return Err(format!(
            "the upgrade socket path {} is over 107 bytes; choose a shorter one with --upgrade-sock",
            path.display()
        ));
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if upgrade && !dir.is_dir() {
        return Err(format!(
            "cannot wait for the sockets on {}: {} is not a directory",
            path.display(),
            dir.display()
        ));
    }
    Ok(())
}

/// Pingora's signals (SIGTERM: drain and exit; SIGINT: exit now; SIGQUIT: hand the listening
/// sockets to a new process, then drain and exit), with one guard: SIGQUIT while no new process
/// waits on the upgrade socket is ignored. Pingora would retry for 5 s, then drain and exit
/// anyway, and take the service down.
struct Signals {
    upgrade_sock: PathBuf,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut quit), Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            log::error!("cannot listen for signals; exiting");
            return ShutdownSignal::FastShutdown;
        };
        loop {
            tokio::select! {
                _ = quit.recv() => {
                    if self.upgrade_sock.exists() {
                        log::info!(
                            "SIGQUIT: handing the listening sockets over {}, then draining",
                            self.upgrade_sock.display()
                        );
                        return ShutdownSignal::GracefulUpgrade;
                    }
                    log::error!(
                        "SIGQUIT ignored: no new process waits on {}; start `palisade run --upgrade` first",
                        self.upgrade_sock.display()
                    );
                }
                _ = term.recv() => return ShutdownSignal::GracefulTerminate,
                _ = int.recv() => return ShutdownSignal::FastShutdown,
            }
        }
    }
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

/// Client connections read straight from the socket: Pingora reads a request head into a
/// buffer of its own and TLS has its own, so the 64 KiB read buffer Pingora puts below them
/// by default only costs memory on every open connection (most of them idle keep-alives).
///
/// Plain connections also write straight to the socket: every one of them is HTTP/1.x, and
/// the wrapper that times its request heads gathers each response into one write, holding
/// the buffer only while a response is written ([`crate::head_deadline`]). TLS connections
/// keep Pingora's small write buffer below TLS: HTTP/2 ones are not wrapped.
fn client_buffers(tls: bool) -> L4BufferSettings {
    let buffers = L4BufferSettings::default().read(0);
    if tls {
        buffers
    } else {
        buffers.write(0)
    }
}
