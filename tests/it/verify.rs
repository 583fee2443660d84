//! `palisade verify URL` against live gateways: a strong one passes every check (and its burst
//! meets a 429 with the right headers), a weak one in front of a legacy app fails the specific
//! checks, and a server that still speaks TLS 1.1 is caught.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Command;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::harness::{Gateway, Upstream, Workdir, BIN, DEAD};

/// Runs `palisade verify ARGS`: (exit code, stdout, stderr).
async fn verify(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(BIN)
            .arg("verify")
            .args(&args)
            .output()
            .expect("run palisade verify");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("verify finished")
}

/// The report line of `check`: `GRADE  check  what was seen (fix: ...)`.
fn line<'a>(out: &'a str, check: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(check))
        .unwrap_or_else(|| panic!("no `{check}` line in:\n{out}"))
}

fn grade<'a>(out: &'a str, check: &str) -> &'a str {
    line(out, check)
        .split_whitespace()
        .next()
        .unwrap_or_default()
}

const CHECKS: &[&str] = &[
    "tls_version",
    "tls_legacy",
    "certificate",
    "cert_expiry",
    "redirect_https",
    "hsts",
    "csp",
    "nosniff",
    "frame",
    "referrer",
    "fingerprints",
    "healthz",
    "not_found",
    "body_limit",
    "cors",
    "rate_limit",
];

/// TLS, a redirect, strict-api headers, a 64 KiB body limit, CORS for one origin, 20/min per IP.
fn strong(upstream: &Upstream) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:{{HTTP}}"]
tls_listen = ["127.0.0.1:{{HTTPS}}"]
redirect_https = true
max_body = "64KiB"

[admin]
listen = "127.0.0.1:{{ADMIN}}"

[tls]
[[tls.certificates]]
cert = "certs/main/dev.pem"
key = {{ file = "certs/main/dev-key.pem" }}

[defaults]
headers = "strict-api"
cors = "app"
rate_limits = ["per_ip"]

[cors.app]
allow_origins = ["https://app.example.com"]
allow_credentials = true

[rate_limits.per_ip]
key = "client_ip"
limit = 20
per = "1m"

[upstreams.app]
servers = ["{}"]

[[routes]]
name = "api"
path = "/api"
upstream = "app"
"#,
        upstream.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strong_gateway_passes_and_its_burst_meets_a_429() {
    let upstream = Upstream::start("app").await;
    let gw = Gateway::start(&strong(&upstream)).await;
    let url = gw.https_url("/api/hello");
    let ca = gw.work.path().join("certs/main/dev.pem");
    let ca = ca.to_str().expect("utf-8 path");
    let http_port = gw.ports.http.to_string();

    let (code, out, err) = verify(&[&url, "--ca", ca, "--http-port", &http_port]).await;
    assert_eq!(code, 0, "{out}{err}");
    for check in CHECKS {
        let expected = if *check == "rate_limit" {
            "SKIP"
        } else {
            "PASS"
        };
        assert_eq!(grade(&out, check), expected, "{check}:\n{out}");
    }
    assert!(
        line(&out, "tls_version").contains("TLS 1.3 negotiated (ALPN h2)"),
        "{out}"
    );
    assert!(
        line(&out, "redirect_https").contains(&format!(
            "308 to https://localhost:{}/api/hello",
            gw.ports.https
        )),
        "{out}"
    );
    assert!(line(&out, "hsts").contains("max-age=63072000"), "{out}");
    assert!(line(&out, "healthz").contains("answers 404"), "{out}");
    assert!(
        line(&out, "body_limit")
            .contains("413 for a body of 16777217 bytes, before any of it was sent"),
        "{out}"
    );
    assert!(
        line(&out, "cors").contains("no Access-Control-Allow-Origin"),
        "{out}"
    );
    // The page and the CORS GET reached the app; the oversized POST never did.
    assert_eq!(upstream.hits(), 2, "{out}");

    // Without the dev CA the certificate is not trusted: a FAIL, and the rest still runs.
    let (code, out, err) = verify(&[&url, "--http-port", &http_port]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(grade(&out, "certificate"), "FAIL", "{out}");
    assert!(
        line(&out, "certificate").contains("not trusted for localhost"),
        "{out}"
    );
    assert_eq!(grade(&out, "hsts"), "PASS", "{out}");

    // A burst: 20 per minute, so at most 40 requests meet the 429 and its headers.
    let (code, out, err) = verify(&[
        &url,
        "--ca",
        ca,
        "--http-port",
        &http_port,
        "--allow-load",
        "40",
        "--body-limit",
        "64KiB",
        "--format",
        "json",
    ])
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let findings: Value = serde_json::from_str(&out).expect("a JSON array");
    let findings = findings.as_array().expect("an array");
    assert_eq!(findings.len(), CHECKS.len(), "{out}");
    let finding = |check: &str| {
        findings
            .iter()
            .find(|f| f["check"] == check)
            .unwrap_or_else(|| panic!("no {check} in {out}"))
    };
    let limit = finding("rate_limit");
    assert_eq!(limit["grade"], "PASS", "{limit}");
    let reason = limit["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("429 after"), "{reason}");
    assert!(reason.contains("retry-after: "), "{reason}");
    assert!(reason.contains("x-ratelimit-limit: 20"), "{reason}");
    assert!(reason.contains("ratelimit: \"per_ip\";r=0"), "{reason}");
    let body = finding("body_limit");
    assert_eq!(body["grade"], "PASS", "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("65537 bytes"),
        "{body}"
    );
    assert_eq!(finding("hsts")["fix"], "", "no fix on a pass");
    assert!(
        err.contains("0 fail"),
        "the summary goes to stderr with --format json: {err}"
    );
}

/// An app of the kind Palisade is put in front of: it names its software, reflects any
/// origin with credentials, prints stack traces on 404 and its version on /healthz.
struct LegacyApp {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl LegacyApp {
    async fn start() -> LegacyApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind legacy app");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(legacy);
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        LegacyApp { addr, task }
    }
}

impl Drop for LegacyApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn legacy(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    let origin = req.headers().get("origin").cloned();
    // Reads whatever body it is sent, however large.
    let _ = req.into_body().collect().await;
    let (status, body) = if path == "/healthz" {
        (
            200,
            r#"{"status":"ok","version":"5.6.40","hostname":"db-01.internal"}"#.to_string(),
        )
    } else if path.starts_with("/app") {
        (200, "<h1>Welcome</h1>".to_string())
    } else {
        (
            404,
            format!(
                "<b>Fatal error</b>: Uncaught Exception: no page {path} in \
                 /var/www/html/index.php on line <b>12</b><hr>Apache/2.4.1 (Unix) Server"
            ),
        )
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
    let h = r.headers_mut();
    h.insert("content-type", "text/html".parse().expect("value"));
    h.insert("server", "Apache/2.4.1 (Unix)".parse().expect("value"));
    h.insert("x-powered-by", "PHP/5.6.40".parse().expect("value"));
    h.insert("x-frame-options", "ALLOWALL".parse().expect("value"));
    if let Some(origin) = origin {
        h.insert("access-control-allow-origin", origin);
        h.insert(
            "access-control-allow-credentials",
            "true".parse().expect("value"),
        );
    }
    Ok(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weak_gateway_fails_the_specific_checks() {
    let app = LegacyApp::start().await;
    let work = Workdir::new();
    // Five days left: a warning, not yet a failure.
    work.cert_for_days("main", &["localhost", "127.0.0.1"], 5);
    let config = format!(
        r#"
[server]
listen = ["127.0.0.1:{{HTTP}}"]
tls_listen = ["127.0.0.1:{{HTTPS}}"]
redirect_https = false
max_body = "32MiB"

[admin]
listen = "127.0.0.1:{{ADMIN}}"

[tls]
[[tls.certificates]]
cert = "certs/main/dev.pem"
key = {{ file = "certs/main/dev-key.pem" }}

[defaults]
headers = "none"

[upstreams.legacy]
servers = ["{}"]

[[routes]]
name = "legacy"
path = "/"
upstream = "legacy"
"#,
        app.addr
    );
    let gw = Gateway::start_in(work, &config, &[]).await;
    let url = gw.https_url("/app/home");
    let http_url = gw.http_url("/app/home");
    let (code, out, err) = verify(&[
        &url,
        "--insecure",
        "--http-url",
        &http_url,
        "--body-limit",
        "1MiB",
        "--allow-load",
        "5",
    ])
    .await;
    assert_eq!(code, 1, "{out}{err}");
    for check in [
        "redirect_https",
        "hsts",
        "csp",
        "nosniff",
        "frame",
        "fingerprints",
        "healthz",
        "not_found",
        "body_limit",
        "cors",
    ] {
        assert_eq!(grade(&out, check), "FAIL", "{check}:\n{out}");
        assert!(
            line(&out, check).contains("(fix: "),
            "a FAIL says the fix: {out}"
        );
    }
    for check in ["certificate", "cert_expiry", "referrer", "rate_limit"] {
        assert_eq!(grade(&out, check), "WARN", "{check}:\n{out}");
    }
    for check in ["tls_version", "tls_legacy"] {
        assert_eq!(grade(&out, check), "PASS", "{check}:\n{out}");
    }
    assert!(
        line(&out, "redirect_https").contains("answers 200 over plain HTTP"),
        "{out}"
    );
    let fingerprints = line(&out, "fingerprints");
    assert!(
        fingerprints.contains("server: Apache/2.4.1 (Unix)"),
        "{out}"
    );
    assert!(fingerprints.contains("x-powered-by: PHP/5.6.40"), "{out}");
    assert!(line(&out, "frame").contains("ALLOWALL"), "{out}");
    assert!(line(&out, "healthz").contains("5.6.40"), "{out}");
    assert!(line(&out, "healthz").contains("host name"), "{out}");
    assert!(line(&out, "not_found").contains("stack trace"), "{out}");
    assert!(
        line(&out, "body_limit").contains("a body of 1048577 bytes got 200, not 413"),
        "{out}"
    );
    assert!(
        line(&out, "cors").contains("echoes Origin: https://evil.example"),
        "{out}"
    );
    assert!(line(&out, "cors").contains("with credentials"), "{out}");
    // Whole days left, rounded down: 4 once a second has passed since the certificate was made.
    let expiry = line(&out, "cert_expiry");
    assert!(
        expiry.contains("expires in 4 days") || expiry.contains("expires in 5 days"),
        "{out}"
    );
    assert!(
        line(&out, "certificate").contains("not verified (--insecure)"),
        "{out}"
    );
    assert!(
        line(&out, "rate_limit").contains("no 429 within 5 requests"),
        "{out}"
    );
    assert!(out.contains(" 10 fail,"), "the summary counts: {out}");
}

/// A TCP relay in front of a gateway that answers a TLS 1.1 ClientHello with a ServerHello
/// for TLS 1.1, as an old server would, and passes every other connection through.
async fn tls11_relay(to: u16) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind relay");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut hello = [0u8; 11];
                if client.peek(&mut hello).await.ok() != Some(11) {
                    return;
                }
                if hello[9..11] == [0x03, 0x02] {
                    let mut server_hello =
                        vec![0x16, 0x03, 0x02, 0x00, 0x2a, 0x02, 0x00, 0x00, 0x26];
                    server_hello.extend_from_slice(&[0x03, 0x02]);
                    server_hello.extend_from_slice(&[7u8; 32]);
                    server_hello.extend_from_slice(&[0x00, 0xc0, 0x13, 0x00]);
                    let _ = client.write_all(&server_hello).await;
                    return;
                }
                if let Ok(mut gateway) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut gateway).await;
                }
            });
        }
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_accepts_tls_1_1_fails_tls_legacy() {
    let upstream = Upstream::start("app").await;
    let gw = Gateway::start(&strong(&upstream)).await;
    let (port, relay) = tls11_relay(gw.ports.https).await;
    let ca = gw.work.path().join("certs/main/dev.pem");
    let url = format!("https://localhost:{port}/api/hello");
    let (code, out, err) = verify(&[
        &url,
        "--ca",
        ca.to_str().expect("utf-8 path"),
        "--http-port",
        &gw.ports.http.to_string(),
    ])
    .await;
    relay.abort();
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(grade(&out, "tls_legacy"), "FAIL", "{out}");
    assert!(
        line(&out, "tls_legacy").contains("ServerHello for TLS 1.1"),
        "{out}"
    );
    assert_eq!(grade(&out, "tls_version"), "PASS", "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_a_failed_connect_and_bad_flags_are_usage_errors() {
    let (code, out, err) = verify(&[&format!("https://{DEAD}/"), "--timeout", "2s"]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(grade(&out, "connect"), "FAIL", "{out}");
    assert!(out.contains("1 fail"), "{out}");

    for args in [
        &[][..],
        &["http://localhost/"][..],
        &["https://localhost/", "--allow-load", "0"][..],
        &["https://localhost/", "--allow-load", "100000"][..],
        &["https://localhost/", "--body-limit", "lots"][..],
        &["https://localhost/", "--http-url", "https://localhost/"][..],
        &["https://localhost/", "--surprise"][..],
        &["https://localhost/", "--ca", "/nonexistent/ca.pem"][..],
    ] {
        let (code, out, err) = verify(args).await;
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains("verify"), "{args:?}: {err}");
    }
}
