//! Starts the real `palisade` binary on free ports with a temporary config, an in-process
//! upstream that echoes what it received, and real HTTP/1.1 and HTTP/2 clients over TLS.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const BIN: &str = env!("CARGO_BIN_EXE_palisade");

/// An address where nothing listens: connects are refused at once. (A port from
/// [`free_port`] could be handed to another test's listener in the meantime.)
pub const DEAD: &str = "127.0.0.1:1";

/// A port nobody listens on right now, for a listener a test starts later (a gateway's, a
/// Redis server's).
///
/// Taken below the kernel's ephemeral range, never from it: the echo upstreams bind port 0 and
/// outgoing connections take their source ports there, so a port from that range can be an
/// upstream another test has just dropped while its gateway still sends to it (health checks,
/// retries). A gateway of ours listening there got that other test's requests and counted
/// them against its rate limits. Below the range, ports are handed out by one counter for the
/// whole test process, so two tests here never pick the same one either.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let (low, high) = below_ephemeral_range();
    let span = usize::from(high - low);
    // Apart from another test process on this machine: start where this process's id points.
    let start = std::process::id() as usize * 7919;
    for _ in 0..span {
        let port = low + ((start + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        if port_is_free(port) {
            return port;
        }
    }
    panic!("no free port in {low}..{high}");
}

/// Ports from 10000 up to the start of the kernel's ephemeral range (32768 by default).
fn below_ephemeral_range() -> (u16, u16) {
    let first_ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    (10_000, first_ephemeral.max(20_000))
}

/// Nothing listens on the port on 127.0.0.1, nor on ::1 (`localhost` in a URL may try ::1
/// first, and a listener there would take the connection).
fn port_is_free(port: u16) -> bool {
    let v4 = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    let v6_taken = matches!(
        std::net::TcpListener::bind(("::1", port)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse
    );
    v4 && !v6_taken
}

// ---------------------------------------------------------------------------------------------
// The echo upstream.

/// What the echo upstream saw of one request, as it reports it in its JSON body.
#[derive(Debug)]
pub struct Seen(pub Value);

impl Seen {
    pub fn header(&self, name: &str) -> Option<String> {
        self.0["headers"][name].as_str().map(str::to_string)
    }
    pub fn server(&self) -> &str {
        self.0["server"].as_str().unwrap_or_default()
    }
    pub fn path(&self) -> &str {
        self.0["path"].as_str().unwrap_or_default()
    }
    pub fn query(&self) -> Option<&str> {
        self.0["query"].as_str()
    }
    pub fn body_sha256(&self) -> &str {
        self.0["body_sha256"].as_str().unwrap_or_default()
    }
}

struct UpstreamState {
    name: String,
    hits: AtomicUsize,
    /// Requests whose body arrived whole.
    complete_bodies: AtomicUsize,
    healthy: AtomicBool,
    /// Connections accepted.
    connections: AtomicUsize,
}

/// An HTTP/1.1 server that answers:
/// - `/health`: 200, or 503 after `set_healthy(false)`;
/// - `/status/NNN`: that status, with a stack trace a masking gateway must not leak
///   (`/status/NNN/empty`: with no body);
/// - a path containing `/legacy`: the echo, announcing itself like a legacy app (`Server`,
///   `X-Powered-By`, ..., its own `X-Request-Id`) and setting bare cookies;
/// - `.../slow?ms=N`: the echo, after N milliseconds;
/// - anything else: the echo of what it received (method, path, query, headers, body hash).
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<UpstreamState>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start(name: &str) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let state = Arc::new(UpstreamState {
            name: name.to_string(),
            hits: AtomicUsize::new(0),
            complete_bodies: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            connections: AtomicUsize::new(0),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| echo(req, state.clone()));
                    let mut server =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    // As many request fields as Pingora parses (hyper's own default is 100).
                    server.http1().max_headers(256);
                    let _ = server.serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Upstream { addr, state, task }
    }

    /// Requests seen, health checks excluded.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Requests whose body arrived complete (a cut chunked body does not count).
    pub fn complete_bodies(&self) -> usize {
        self.state.complete_bodies.load(Ordering::SeqCst)
    }

    /// Connections accepted (the gateway's, and health checks').
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::SeqCst);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn echo(
    req: Request<Incoming>,
    state: Arc<UpstreamState>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/health" {
        let ok = state.healthy.load(Ordering::SeqCst);
        return Ok(respond(
            if ok { 200 } else { 503 },
            "text/plain",
            Bytes::from_static(b"health"),
        ));
    }
    state.hits.fetch_add(1, Ordering::SeqCst);
    if let Some(rest) = path.find("/status/").map(|i| &path[i + "/status/".len()..]) {
        let (code, empty) = match rest.strip_suffix("/empty") {
            Some(code) => (code, true),
            None => (rest, false),
        };
        if let Ok(code) = code.parse::<u16>() {
            let body = if empty {
                String::new()
            } else {
                format!(
                    "Traceback (most recent call last): secret internals from {}",
                    state.name
                )
            };
            let mut r = respond(code, "text/plain", Bytes::from(body));
            announce_like_a_legacy_app(&mut r);
            return Ok(r);
        }
    }
    let query = req.uri().query().map(str::to_string);
    if path.ends_with("/bytes") {
        // `?n=N`: N bytes of a fixed pattern (`pattern_bytes`), for bodies far larger than
        // any buffer on the way.
        let n = query_number(query.as_deref(), "n=").unwrap_or(0);
        return Ok(respond(
            200,
            "application/octet-stream",
            Bytes::from(pattern_bytes(n)),
        ));
    }
    if path.ends_with("/slow") {
        let ms = query_number(query.as_deref(), "ms=").unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let method = req.method().to_string();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in req.headers() {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_string())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    let body = match req.into_body().collect().await {
        Ok(b) => {
            state.complete_bodies.fetch_add(1, Ordering::SeqCst);
            b.to_bytes()
        }
        Err(_) => Bytes::new(),
    };
    let report = json!({
        "server": state.name,
        "method": method,
        "path": path,
        "query": query,
        "headers": headers,
        "body_len": body.len(),
        "body_sha256": hex(&Sha256::digest(&body)),
    });
    let mut r = respond(200, "application/json", Bytes::from(report.to_string()));
    if path.contains("/legacy") {
        announce_like_a_legacy_app(&mut r);
    }
    // `?fields=N`: N more fields in the response, `x-app-field-I: value-I`.
    if let Some(n) = query_number::<usize>(query.as_deref(), "fields=") {
        for i in 0..n {
            let name = format!("x-app-field-{i}");
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                format!("value-{i}").parse(),
            ) {
                r.headers_mut().append(name, value);
            }
        }
    }
    // `?token=T`: a header of the app's whose value is T, new to an HTTP/2 connection's
    // HPACK table every time T is.
    if let Some(token) = query.as_deref().and_then(|q| q.strip_prefix("token=")) {
        if let Ok(value) = token.parse() {
            r.headers_mut().insert("x-app-token", value);
        }
    }
    Ok(r)
}

/// The number in a query of one parameter, `key` its name and `=`.
fn query_number<N: std::str::FromStr>(query: Option<&str>, key: &str) -> Option<N> {
    query?.strip_prefix(key)?.parse().ok()
}

fn announce_like_a_legacy_app(r: &mut Response<Full<Bytes>>) {
    let h = r.headers_mut();
    for (name, value) in [
        ("server", "Werkzeug/2.0.1 Python/3.8.10"),
        ("x-powered-by", "Express"),
        ("x-aspnet-version", "4.0.30319"),
        ("x-drupal-cache", "HIT"),
        ("via", "1.1 varnish"),
        ("x-frame-options", "ALLOWALL"),
        ("cache-control", "private, max-age=30"),
        ("access-control-allow-origin", "*"),
        ("x-request-id", "made-up-by-the-app"),
        ("set-cookie", "session=abc123; Path=/"),
        ("set-cookie", "theme=dark; Path=/; SameSite=Strict"),
    ] {
        h.append(name, value.parse().expect("header"));
    }
}

fn respond(status: u16, content_type: &str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert("content-type", content_type.parse().expect("content type"));
    r
}

/// Whether process `pid` holds a TCP socket listening on `port` (IPv4 or IPv6), by the
/// socket inodes of its open files and the kernel's tables in `/proc`.
fn listens_on(pid: u32, port: u16) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let inodes: std::collections::HashSet<String> = fds
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            let inode = target.strip_prefix("socket:[")?.strip_suffix(']')?;
            Some(inode.to_string())
        })
        .collect();
    let wanted = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|line| {
                // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.len() > 9
                    && fields[1].ends_with(&wanted)
                    && fields[3] == "0A"
                    && inodes.contains(fields[9])
            })
    })
}

/// `n` bytes that no run of a few repeats: a body that arrives reordered, cut or doubled
/// does not hash the same.
pub fn pattern_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8 ^ (i / 251) as u8).collect()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Redis.

/// A real `redis-server` on a free port, killed when dropped.
pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    /// Starts one, or returns `None` (and says so loudly) when redis-server is not installed
    /// outside CI. In CI (`CI` set) a missing redis-server fails the test: `make test`
    /// installs it.
    pub async fn start() -> Option<RedisServer> {
        if !redis_installed() {
            return None;
        }
        Some(RedisServer::spawn(&[], None).await)
    }

    /// Three nodes in cluster mode, their slots assigned (`redis-cli --cluster create`).
    pub async fn start_cluster(dir: &Path) -> Option<Vec<RedisServer>> {
        if !redis_installed() {
            return None;
        }
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let args = ["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"];
            nodes.push(RedisServer::spawn(&args, Some(dir)).await);
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli (it comes with redis-server)");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let info = Command::new("redis-cli")
                .args(["-p", &nodes[0].port.to_string(), "cluster", "info"])
                .output()
                .expect("redis-cli");
            if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                return Some(nodes);
            }
            assert!(Instant::now() < deadline, "the cluster did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn spawn(extra: &[&str], dir: Option<&Path>) -> RedisServer {
        for _ in 0..3 {
            let port = free_port();
            let mut cmd = Command::new("redis-server");
            if let Some(dir) = dir {
                cmd.current_dir(dir)
                    .args(["--cluster-config-file", &format!("nodes-{port}.conf")]);
            }
            let child = cmd
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            let mut server = RedisServer { child, port };
            if server.wait_ready().await {
                return server;
            }
        }
        panic!("redis-server did not start");
    }

    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if self.ping().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }

    async fn ping(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").await.is_ok()
            && s.read_exact(&mut buf).await.is_ok()
            && &buf == b"+PONG\r\n"
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_installed() -> bool {
    let installed = Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok();
    if !installed {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server is not installed (make test installs it)"
        );
        eprintln!("SKIPPED: redis-server is not installed; run `make test` to install it");
    }
    installed
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// The gateway process.

/// A temporary folder with development certificates for the given host names.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Workdir {
        Workdir {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `certs/<name>/dev.pem` and `dev-key.pem` for `hosts` with `palisade cert dev`.
    pub fn cert(&self, name: &str, hosts: &[&str]) -> PathBuf {
        self.cert_for_days(name, hosts, 365)
    }

    /// Like [`Workdir::cert`], valid for `days` from now.
    pub fn cert_for_days(&self, name: &str, hosts: &[&str], days: u32) -> PathBuf {
        let out = self.path().join("certs").join(name);
        let mut cmd = Command::new(BIN);
        cmd.args(["cert", "dev", "--days", &days.to_string(), "--out"])
            .arg(&out);
        for h in hosts {
            cmd.args(["--host", h]);
        }
        let status = cmd
            .stdout(Stdio::null())
            .status()
            .expect("run palisade cert dev");
        assert!(status.success(), "palisade cert dev failed");
        out
    }

    pub fn write(&self, file: &str, text: &str) -> PathBuf {
        let path = self.path().join(file);
        std::fs::write(&path, text).expect("write file");
        path
    }
}

/// Runs `palisade check FILE`: (exit code, stdout, stderr).
pub fn check(config: &Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("check")
        .arg(config)
        .output()
        .expect("run palisade check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub struct Ports {
    pub http: u16,
    pub https: u16,
    pub admin: u16,
}

impl Ports {
    pub fn new() -> Ports {
        Ports {
            http: free_port(),
            https: free_port(),
            admin: free_port(),
        }
    }

    /// Replaces `{HTTP}`, `{HTTPS}` and `{ADMIN}` in a config template.
    pub fn fill(&self, template: &str) -> String {
        template
            .replace("{HTTP}", &self.http.to_string())
            .replace("{HTTPS}", &self.https.to_string())
            .replace("{ADMIN}", &self.admin.to_string())
    }
}

/// A running `palisade run`, killed when dropped. Its stdout (the access log) and stderr go to
/// files, so a full pipe never blocks it.
pub struct Gateway {
    child: Child,
    pub ports: Ports,
    pub work: Workdir,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// The TLS listener template most tests use: a certificate for localhost in `certs/main`.
pub const TLS_BASICS: &str = r#"
[server]
listen = ["127.0.0.1:{HTTP}"]
tls_listen = ["127.0.0.1:{HTTPS}"]
redirect_https = false

[admin]
listen = "127.0.0.1:{ADMIN}"

[tls]
[[tls.certificates]]
cert = "certs/main/dev.pem"
key = { file = "certs/main/dev-key.pem" }
"#;

impl Gateway {
    /// Starts the gateway with `config` (a template, see [`Ports::fill`]) in a fresh workdir
    /// with a localhost certificate in `certs/main`.
    pub async fn start(config: &str) -> Gateway {
        let work = Workdir::new();
        work.cert("main", &["localhost", "127.0.0.1"]);
        Gateway::start_in(work, config, &[]).await
    }

    pub async fn start_in(work: Workdir, config: &str, env: &[(&str, &str)]) -> Gateway {
        let mut work = work;
        // A port picked by `free_port` can be taken by another test before palisade binds it:
        // then palisade says so and exits, and it is started again on other ports.
        for attempt in 1.. {
            let mut gw = Gateway::spawn(work, config, env);
            match gw.wait_ready().await {
                Ok(()) => return gw,
                // Pingora can also lose the race for a port after our own check passed, and
                // then exits with its own message: any exit before ready is tried again.
                Err(e)
                    if attempt < 3 && (e.contains("cannot listen on") || e.contains("exited")) =>
                {
                    eprintln!("palisade did not start, trying other ports: {e}");
                    work = std::mem::replace(&mut gw.work, Workdir::new());
                }
                Err(e) => panic!("{e}"),
            }
        }
        unreachable!()
    }

    fn spawn(work: Workdir, config: &str, env: &[(&str, &str)]) -> Gateway {
        let ports = Ports::new();
        let path = work.write("gateway.toml", &ports.fill(config));
        let stdout = work.path().join("stdout.log");
        let stderr = work.path().join("stderr.log");
        let mut cmd = Command::new(BIN);
        cmd.arg("run")
            .arg("--config")
            .arg(&path)
            .arg("--pid-file")
            .arg(work.path().join("palisade.pid"))
            .env("RUST_LOG", "warn,palisade=info")
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn palisade");
        Gateway {
            child,
            ports,
            work,
            stdout,
            stderr,
        }
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = format!("http://127.0.0.1:{}/healthz", self.ports.admin);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "palisade exited with {status} before it was ready:\n{}",
                    self.stderr()
                ));
            }
            if let Ok(r) = reqwest::get(&url).await {
                if r.status() == 200 && self.gateway_listeners_bound() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("palisade did not become ready:\n{}", self.stderr()))
    }

    /// Pingora binds each service's listeners when the service starts, so the admin listener
    /// can answer before the gateway's own are bound: wait for those the config names too.
    fn gateway_listeners_bound(&self) -> bool {
        let config =
            std::fs::read_to_string(self.work.path().join("gateway.toml")).unwrap_or_default();
        for port in [self.ports.http, self.ports.https] {
            let named = config.contains(&format!("127.0.0.1:{port}\""));
            // Listening in this process, not merely accepting: a port picked by `free_port`
            // can be taken by another test's process before palisade binds it, and then a
            // connect succeeds (to that process) while palisade is about to exit.
            if named && !listens_on(self.child.id(), port) {
                return false;
            }
        }
        true
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.http)
    }

    pub fn https_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.ports.https)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.admin)
    }

    /// The certificate (PEM) of `certs/NAME`, to trust in a client.
    pub fn cert_pem(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.work.path().join("certs").join(name).join("dev.pem")).expect("cert pem")
    }

    /// A client that trusts every certificate in `certs/`, never follows redirects, and speaks whatever ALPN picks.
    pub fn client(&self) -> reqwest::Client {
        self.client_builder().build().expect("client")
    }

    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10));
        let certs = std::fs::read_dir(self.work.path().join("certs")).expect("certs folder");
        for entry in certs.flatten() {
            if let Ok(pem) = std::fs::read(entry.path().join("dev.pem")) {
                builder = builder
                    .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("cert"));
            }
        }
        builder
    }

    /// The Prometheus text from `/metrics`.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.admin_url("/metrics"))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Every access log line written so far.
    pub fn access_log(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.stdout)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The access log line of a request id (not an audit event's), waiting briefly for the
    /// writer thread.
    pub async fn access_line(&self, request_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(line) = self
                .access_log()
                .into_iter()
                .find(|l| l["request_id"] == request_id && l.get("event").is_none())
            {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no access log line for {request_id}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Writes a new config (a template, filled with this gateway's ports), sends SIGHUP, and
    /// waits for the reload to be counted. Returns "success" or "error".
    pub async fn reload(&self, config: &str) -> &'static str {
        self.work.write("gateway.toml", &self.ports.fill(config));
        let count = |text: &str, result: &str| {
            let prefix = format!("gateway_config_reloads_total{{result=\"{result}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let before = self.metrics().await;
        let (ok, err) = (count(&before, "success"), count(&before, "error"));
        self.signal("HUP");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = self.metrics().await;
            if count(&now, "success") > ok {
                return "success";
            }
            if count(&now, "error") > err {
                return "error";
            }
            assert!(
                Instant::now() < deadline,
                "the reload was not counted:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit; its status, or None after `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        None
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts the shape of every gateway-made error: JSON with `error` and a `request_id` equal to
/// the `X-Request-Id` header. Returns the body.
pub async fn gateway_error(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .expect("x-request-id on a gateway-made response");
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let body: Value = response.json().await.expect("a JSON body");
    assert!(body["error"].is_string(), "{body}");
    assert_eq!(body["request_id"], id.as_str(), "{body}");
    body
}

pub async fn seen(response: reqwest::Response) -> Seen {
    assert_eq!(response.status(), 200, "expected the upstream's echo");
    Seen(response.json().await.expect("echo JSON"))
}
