//! Work that runs beside the requests: active upstream health checks, the connection gauge,
//! and the drain that ends the process as soon as in-flight requests finish after SIGTERM (or
//! after SIGQUIT, once the listening sockets were handed to the new process of an upgrade).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Poll};
use std::time::Duration;

use async_trait::async_trait;
use http::header::{HOST, USER_AGENT};
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora_core::connectors::http::Connector;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_http::RequestHeader;
use prometheus::IntGauge;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use crate::head_deadline::{BadHead, HeadDeadline};
use crate::policy::forwarded::canonical;
use crate::policy::in_flight::InFlightTable;
use crate::proxy::Shared;
use crate::upstream::{now_ms, thread_index, ActiveCheck, Pool, Server};

/// Runs each pool's active check at its interval, against whichever config is live.
pub struct HealthChecks {
    pub shared: Arc<Shared>,
}

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let connector = Connector::new(None);
        // A pool with an active check is looked at every 100 ms; with none configured the
        // thread wakes once a second (to see a reload that adds one), not ten times: an idle
        // gateway's wake-ups are CPU the request threads lose, and they move them between CPUs.
        let mut wait = Duration::ZERO;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
            let runtime = self.shared.runtime.load_full();
            wait = if runtime.upstreams.values().any(|p| p.check.is_some()) {
                Duration::from_millis(100)
            } else {
                Duration::from_secs(1)
            };
            let now = now_ms();
            for pool in runtime.upstreams.values() {
                let Some(check) = &pool.check else { continue };
                let last = pool
                    .last_check_ms
                    .load(std::sync::atomic::Ordering::Relaxed);
                if last != 0 && now.saturating_sub(last) < check.interval.as_millis() as u64 {
                    continue;
                }
                pool.last_check_ms
                    .store(now.max(1), std::sync::atomic::Ordering::Relaxed);
                let checks = pool
                    .servers
                    .iter()
                    .map(|s| check_server(&connector, pool, s, check));
                futures::future::join_all(checks).await;
            }
        }
    }
}

async fn check_server(connector: &Connector, pool: &Pool, server: &Server, check: &ActiveCheck) {
    let ok = tokio::time::timeout(check.timeout, probe(connector, server, check))
        .await
        .unwrap_or(false);
    let was = server.health.is_available(now_ms());
    server
        .health
        .record_check(ok, check.healthy_after, check.unhealthy_after);
    let is = server.health.is_available(now_ms());
    if was != is {
        log::warn!(
            "upstream {} server {} is now {}",
            pool.name,
            server.label,
            if is { "healthy" } else { "unhealthy" }
        );
    }
}

async fn probe(connector: &Connector, server: &Server, check: &ActiveCheck) -> bool {
    let mut peer = server.peer();
    peer.options.read_timeout = Some(check.timeout);
    peer.options.connection_timeout = Some(check.timeout);
    let Ok((mut session, _)) = connector.get_http_session(peer.as_ref()).await else {
        return false;
    };
    let Ok(mut req) = RequestHeader::build("GET", check.path.as_bytes(), None) else {
        return false;
    };
    let host = peer.sni.clone();
    let host = if host.is_empty() {
        server.addr.ip().to_string()
    } else {
        host
    };
    if req.insert_header(HOST, host).is_err()
        || req
            .insert_header(USER_AGENT, "palisade-health-check")
            .is_err()
    {
        return false;
    }
    if session.write_request_header(Box::new(req)).await.is_err()
        || session.finish_request_body().await.is_err()
        || session.read_response_header().await.is_err()
    {
        return false;
    }
    session
        .response_header()
        .is_some_and(|r| r.status.is_success() || r.status.is_redirection())
}

/// Serves each client connection, counting them: the gauge is the connections being served or
/// waiting for their next request.
///
/// HTTP/1.1 connections are served here request by request (as Pingora's own loop does), but
/// a connection waits for the first bytes of its next request holding only its socket: Pingora
/// would park a whole request future (about 15 KB) on every idle keep-alive connection.
///
/// It also enforces `max_connections_per_ip` (trusted proxies exempt): a connection over the
/// cap is closed before a byte of it is read, so a slowloris from one address cannot take every
/// socket.
pub struct CountConnections<A> {
    pub inner: Arc<A>,
    pub gauge: IntGauge,
    pub shared: Arc<Shared>,
    pub per_ip: Arc<InFlightTable>,
    /// The gateway's answer to a request head Pingora refuses (see [`bad_head_answer`]).
    pub bad_head: BadHead,
    /// Set, and its waiters woken, when idle connections must close (end of the drain).
    pub closing: Arc<Closing>,
}

/// The end of the keep-alive linger: connections waiting for a request stop waiting.
///
/// Every HTTP/1.x connection registers a waiter here, once for its life (not once per
/// request: a registration and its removal each take the shard's lock). The waiters are
/// spread over shards by thread (as Pingora does for its own), so threads do not contend for
/// one lock.
pub struct Closing {
    closed: AtomicBool,
    shards: Box<[Notify]>,
}

impl Default for Closing {
    fn default() -> Closing {
        Closing {
            closed: AtomicBool::new(false),
            shards: (0..CLOSING_SHARDS).map(|_| Notify::new()).collect(),
        }
    }
}

const CLOSING_SHARDS: usize = 16;

impl Closing {
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for shard in self.shards.iter() {
            shard.notify_waiters();
        }
    }

    /// A waiter for this thread's shard; [`Closing::register`] it before the first wait.
    fn waiter(&self) -> Notified<'_> {
        self.shards[thread_index() % self.shards.len()].notified()
    }

    /// Registers `waiter` (it stays registered until dropped, across any number of waits);
    /// `false` when the linger already ended.
    fn register(&self, waiter: Pin<&mut Notified<'_>>) -> bool {
        // Registered before the flag is read: a close in between is not missed.
        waiter.enable();
        !self.closed.load(Ordering::Acquire)
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> CountConnections<A> {
    /// HTTP/1.1: one request after another until the connection closes or stops being
    /// reusable, each handed to Pingora only once its first bytes are here.
    async fn serve_http1(
        &self,
        mut conn: Box<HeadDeadline>,
        idle: Duration,
        shutdown: &ShutdownWatch,
    ) {
        let mut reused: Option<Option<HttpPersistentSettings>> = None;
        let mut idle = IdleTimer::new(idle);
        let closing = self.closing.waiter();
        tokio::pin!(closing);
        let lingering = self.closing.register(closing.as_mut());
        // Whether the next request began in the bytes read with the last one (pipelined).
        let mut read_ahead = false;
        loop {
            let timer = reused.is_some().then_some(&mut idle);
            let closing = lingering.then_some(closing.as_mut());
            if !read_ahead && !self.wait_for_request(&mut conn, timer, closing).await {
                return;
            }
            let mut session = ServerSession::new_http1(conn);
            match reused.take() {
                Some(settings) => {
                    if let Some(settings) = settings {
                        settings.apply_to_session(&mut session);
                    }
                }
                // What Pingora's own loop sets on a new connection, but with no time limit
                // (`Some(0)`): Pingora would otherwise register a timer for every head read,
                // which `HeadDeadline` already bounds by `header_read`.
                None => {
                    session.set_keepalive(if *shutdown.borrow() { None } else { Some(0) });
                    // Requests sent before the last is answered are served in turn
                    // (RFC 9112 §9.3.2); the setting carries over to the next requests.
                    session.set_pipelining_enabled(true);
                    session.set_keepalive_reuses_remaining(
                        self.inner
                            .server_options()
                            .and_then(|o| o.keepalive_request_limit),
                    );
                }
            }
            let Some(next) = self.inner.process_new_http(session, shutdown).await else {
                return;
            };
            let (next, settings) = next.consume();
            // Pingora hands back the stream it was given.
            let Ok(next) = next.into_any().downcast::<HeadDeadline>() else {
                log::error!("a reused connection is not the one served; closing it");
                return;
            };
            conn = next;
            read_ahead = conn.next_request(settings.as_ref().and_then(|s| s.pipelined_prefix()));
            reused = Some(settings);
        }
    }

    /// Waits for the first bytes of a request. `false` when none will come: the client closed,
    /// the head deadline passed (first request), the keep-alive `idle` timeout passed (later
    /// requests), or the drain ended.
    ///
    /// Not called when the last request's reads took in the start of the next (pipelined):
    /// Pingora hands those bytes to the next session, and the socket may have nothing more.
    async fn wait_for_request(
        &self,
        conn: &mut HeadDeadline,
        idle: Option<&mut IdleTimer>,
        closing: Option<Pin<&mut Notified<'_>>>,
    ) -> bool {
        let idle = async {
            match idle {
                Some(timer) => timer.expired(Instant::now()).await,
                None => std::future::pending().await,
            }
        };
        // `None`: the linger had ended when the connection came; only a request already
        // there is served.
        let closing = async {
            if let Some(closing) = closing {
                closing.await;
            }
        };
        tokio::select! {
            biased;
            arrived = conn.wait_readable() => matches!(arrived, Ok(true)),
            () = idle => false,
            () = closing => false,
        }
    }
}

/// The keep-alive `idle` timeout of one connection: one timer for the connection's life,
/// moved on only when it fires. A new tokio timer for every wait would take the thread's timer
/// wheel lock twice a request and, whenever its deadline was the wheel's earliest, write to
/// the thread's eventfd to wake its driver (seen with perf: one write per request under load).
struct IdleTimer {
    idle: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl IdleTimer {
    fn new(idle: Duration) -> IdleTimer {
        IdleTimer { idle, sleep: None }
    }

    /// Resolves when `idle` has passed since `since` (the start of a wait). The timer may
    /// still be set for an earlier wait's deadline: when it fires early, it is moved on.
    async fn expired(&mut self, since: Instant) {
        let deadline = since + self.idle;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        std::future::poll_fn(|cx| loop {
            ready!(sleep.as_mut().poll(cx));
            if sleep.deadline() >= deadline {
                return Poll::Ready(());
            }
            sleep.as_mut().reset(deadline);
        })
        .await
    }
}

/// Writes the gateway's JSON 400 in place of Pingora's bare one, with the live config's
/// default response headers, and counts it.
pub fn bad_head_answer(shared: Arc<Shared>) -> BadHead {
    Arc::new(move |https| {
        shared.metrics.bad_heads.inc();
        crate::respond::unparsable_head(shared.runtime.load_full(), https)
    })
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for CountConnections<A> {
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let peer = session
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let place = match peer {
            Some(ip) => {
                let runtime = self.shared.runtime.load();
                if runtime.trusted_proxies.contains(ip) {
                    None
                } else {
                    match self
                        .per_ip
                        .try_acquire(canonical(ip), runtime.max_connections_per_ip)
                    {
                        Some(place) => Some(place),
                        None => {
                            self.shared.metrics.connections_rejected.inc();
                            return None;
                        }
                    }
                }
            }
            None => None,
        };
        self.gauge.inc();
        // An HTTP/1.1 request head must be read whole within `timeouts.header_read`.
        if HeadDeadline::applies_to(&session) {
            // Both are fixed for the connection (a reload that changes `idle` needs a restart).
            let (header_read, idle) = {
                let runtime = self.shared.runtime.load();
                (runtime.timeouts.header_read, runtime.timeouts.idle)
            };
            let session = HeadDeadline::wrap(
                session,
                header_read,
                self.shared.metrics.header_timeouts.clone(),
                Some(self.bad_head.clone()),
            );
            self.serve_http1(session, idle, shutdown).await;
        } else {
            // HTTP/2: Pingora serves the connection's streams.
            self.inner.process_new(session, shutdown).await;
        }
        self.gauge.dec();
        drop(place);
        None
    }

    /// Pingora calls this once the listeners stopped accepting (SIGTERM, or SIGQUIT after the
    /// handover). The proxy's own cleanup closes at once every keep-alive connection that waits
    /// for its next request, and a client that sent one at that moment sees it fail. So the
    /// connections linger first: a request that arrives now is answered with `Connection: close`
    /// (Pingora turns keep-alive off once shutting down), and its client moves to a new
    /// connection, to the new process after an upgrade. Only connections still idle after
    /// [`KEEPALIVE_LINGER`] (or `shutdown_grace` when shorter) are closed.
    async fn cleanup(&self) {
        let linger = KEEPALIVE_LINGER.min(self.shared.runtime.load().shutdown_grace);
        let deadline = tokio::time::Instant::now() + linger;
        while self.gauge.get() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.closing.close();
        self.inner.cleanup().await;
    }
}

/// How long keep-alive connections may stay open once the gateway stops accepting, for their
/// clients' next requests to be answered with `Connection: close` instead of a closed socket.
pub const KEEPALIVE_LINGER: Duration = Duration::from_secs(5);

/// After SIGTERM (or SIGQUIT, once the sockets are handed over), Pingora stops accepting and
/// then sleeps out the whole grace period. This ends the process as soon as no request is in
/// flight and no client connection is open (see [`CountConnections::cleanup`]), or when the
/// grace period is over.
pub struct Drain {
    pub shared: Arc<Shared>,
    pub grace: Duration,
    /// The client connections open (the gauge [`CountConnections`] keeps).
    pub connections: IntGauge,
}

#[async_trait]
impl BackgroundService for Drain {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            if shutdown.changed().await.is_err() {
                return;
            }
            if *shutdown.borrow() {
                break;
            }
        }
        log::info!(
            "shutting down: draining {} in-flight request(s)",
            self.shared.metrics.in_flight()
        );
        let deadline = tokio::time::Instant::now() + self.grace;
        let idle = || self.shared.metrics.in_flight() <= 0 && self.connections.get() <= 0;
        while tokio::time::Instant::now() < deadline {
            if idle() {
                // Let the last responses leave the socket buffers and the log writer; and a
                // connection accepted just before the listener stopped (still in its TLS
                // handshake, so not counted yet) gets its request served.
                tokio::time::sleep(Duration::from_millis(200)).await;
                if idle() {
                    log::info!("drained; exiting");
                    std::process::exit(0);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
