//! Request guards through the real binary: CORS, body limits, content types, IP rules.

use std::io::{Read, Write};
use std::time::Duration;

use bytes::Bytes;

use crate::harness::{gateway_error, seen, Gateway, Upstream, TLS_BASICS};

fn config(app: &Upstream, extra_server: &str) -> String {
    format!(
        r#"{}
[defaults]
headers = "strict-api"

[cors.site]
allow_origins = ["https://app.example.com", "https://*.example.org"]
allow_methods = ["GET", "POST"]
allow_headers = ["Content-Type", "X-API-Key"]
expose_headers = ["X-Request-Id"]
allow_credentials = true
max_age = "10m"

[cors.public]
allow_origins = ["*"]
expose_headers = ["X-Request-Id"]

[upstreams.app]
servers = ["{}"]

[[routes]]
name = "api"
path = "/api"
methods = ["GET", "POST"]
cors = "site"
max_body = "1KiB"
content_types = ["application/json"]
upstream = "app"

[[routes]]
name = "public"
path = "/public"
cors = "public"
upstream = "app"

[[routes]]
name = "internal"
path = "/internal"
allow_ips = ["10.0.0.0/8"]
upstream = "app"

[[routes]]
name = "blocked"
path = "/blocked"
deny_ips = ["127.0.0.0/8"]
upstream = "app"
"#,
        TLS_BASICS.replace(
            "redirect_https = false",
            &format!("redirect_https = false\n{extra_server}")
        ),
        app.addr
    )
}

/// The headers of a GET with `Origin: origin`, and what to call it in a failure.
async fn cors_answer(
    client: &reqwest::Client,
    url: String,
    origin: &str,
) -> (reqwest::header::HeaderMap, String) {
    let r = client
        .get(url)
        .header("origin", origin)
        .send()
        .await
        .unwrap();
    let what = format!("{origin} {:?}", r.version());
    (r.headers().clone(), what)
}

/// Every `Access-Control-Allow-Origin` value of a response.
fn allowed_origins(h: &reqwest::header::HeaderMap) -> Vec<&str> {
    h.get_all("access-control-allow-origin")
        .iter()
        .map(|v| v.to_str().unwrap_or("(not text)"))
        .collect()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflights_are_answered_by_the_gateway_and_refused_without_cors_headers() {
    let app = Upstream::start("app").await;
    let gw = Gateway::start(&config(&app, "")).await;
    let c = gw.client();
    let preflight = |origin: &'static str, method: &'static str, headers: &'static str| {
        c.request(reqwest::Method::OPTIONS, gw.https_url("/api/jobs"))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", headers)
            .send()
    };
    let r = preflight("https://app.example.com", "POST", "content-type, x-api-key")
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        header(&r, "access-control-allow-methods"),
        Some("GET, POST")
    );
    assert_eq!(
        header(&r, "access-control-allow-headers"),
        Some("content-type, x-api-key")
    );
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    assert_eq!(header(&r, "access-control-max-age"), Some("600"));
    assert!(header(&r, "vary").unwrap_or_default().contains("Origin"));
    assert_eq!(
        header(&r, "x-content-type-options"),
        Some("nosniff"),
        "security headers on the 204"
    );
    assert!(r.bytes().await.unwrap().is_empty());

    for (origin, method, headers) in [
        ("https://app.example.com.evil.com", "POST", ""),
        ("https://evil.example.com", "POST", ""),
        ("http://app.example.com", "POST", ""),
        ("https://app.example.com", "DELETE", ""),
        ("https://app.example.com", "POST", "x-admin"),
    ] {
        let r = preflight(origin, method, headers).await.unwrap();
        assert!(
            header(&r, "access-control-allow-origin").is_none(),
            "{origin} {method} {headers}"
        );
        gateway_error(r, 403).await;
    }
    let r = preflight("https://shop.example.org", "GET", "")
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "a wildcard subdomain");
    assert_eq!(app.hits(), 0, "no preflight was forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actual_requests_get_the_gateways_cors_headers_never_the_apps_star() {
    let app = Upstream::start("app").await;
    let gw = Gateway::start(&config(&app, "")).await;
    // HTTP/2 and HTTP/1.1 (where the fixed headers go out as ready-made lines) alike.
    let h1 = gw.client_builder().http1_only().build().unwrap();
    for c in [gw.client(), h1] {
        let r = c
            .get(gw.https_url("/api/legacy"))
            .header("origin", "https://app.example.com")
            .send()
            .await
            .unwrap();
        let what = format!("{:?}", r.version());
        assert_eq!(
            header(&r, "access-control-allow-origin"),
            Some("https://app.example.com"),
            "{what}"
        );
        assert_eq!(
            r.headers()
                .get_all("access-control-allow-origin")
                .iter()
                .count(),
            1
        );
        assert_eq!(
            header(&r, "access-control-allow-credentials"),
            Some("true"),
            "{what}"
        );
        assert_eq!(
            header(&r, "access-control-expose-headers"),
            Some("x-request-id"),
            "{what}"
        );
        let vary: Vec<_> = r.headers().get_all("vary").iter().collect();
        assert_eq!(vary, ["Origin"], "{what}");
        // An origin written as the config writes it gets headers made at load; one written
        // otherwise (case, the default port) or matched by a wildcard gets its own bytes
        // back, with the same headers beside it.
        for origin in [
            "https://APP.example.com",
            "https://app.example.com:443",
            "https://a.example.org",
            "https://app.example.com",
        ] {
            let (h, what) = cors_answer(&c, gw.https_url("/api/legacy"), origin).await;
            assert_eq!(allowed_origins(&h), [origin], "{what}");
            assert_eq!(h["access-control-allow-credentials"], "true", "{what}");
            assert_eq!(h["access-control-expose-headers"], "x-request-id", "{what}");
            assert_eq!(
                h.get_all("access-control-allow-credentials").iter().count(),
                1
            );
        }
        // Any origin without credentials: `*`, the same for everyone, and no `Vary`.
        for origin in ["https://anyone.example", "null"] {
            let (h, what) = cors_answer(&c, gw.https_url("/public/x"), origin).await;
            assert_eq!(allowed_origins(&h), ["*"], "{what}");
            assert_eq!(h["access-control-expose-headers"], "x-request-id", "{what}");
            assert!(
                h.get("access-control-allow-credentials").is_none(),
                "{what}"
            );
            assert!(h.get("vary").is_none(), "{what}");
        }
    }
    let c = gw.client();

    // The app says `*`; a foreign origin gets nothing from the gateway.
    let r = c
        .get(gw.https_url("/api/legacy"))
        .header("origin", "https://evil.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(header(&r, "access-control-allow-origin").is_none());
    assert_eq!(header(&r, "vary"), Some("Origin"));
    // Gateway-made responses carry CORS too, so a page can read the error.
    let r = c
        .delete(gw.https_url("/api/x"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_body_over_the_limit_is_refused_before_the_upstream() {
    let app = Upstream::start("app").await;
    let gw = Gateway::start(&config(&app, "")).await;
    let c = gw.client();
    let json = |n: usize| format!("{{\"pad\":\"{}\"}}", "x".repeat(n));
    let r = c
        .post(gw.https_url("/api/jobs"))
        .header("content-type", "application/json")
        .body(json(2000))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&r, "x-frame-options"),
        Some("DENY"),
        "security headers on the 413"
    );
    let body = gateway_error(r, 413).await;
    assert!(
        body["error"].as_str().unwrap().contains("1024 bytes"),
        "{body}"
    );
    assert_eq!(app.hits(), 0);
    let r = c
        .post(gw.https_url("/api/jobs"))
        .header("content-type", "application/json")
        .body(json(500))
        .send()
        .await
        .unwrap();
    assert_eq!(seen(r).await.0["body_len"], 510);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_over_the_limit_is_cut_and_the_app_never_gets_it_whole() {
    let app = Upstream::start("app").await;
    let gw = Gateway::start(&config(&app, "")).await;
    // HTTP/1.1 chunked and HTTP/2 without a length: the size is only known as it streams.
    for client in [
        gw.client_builder().http1_only().build().unwrap(),
        gw.client(),
    ] {
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            (0..8).map(|_| Ok(Bytes::from(vec![b'a'; 512]))).collect();
        let stream = futures_util::stream::iter(chunks);
        let r = client
            .post(gw.https_url("/api/upload"))
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await;
        if let Ok(r) = r {
            // The client may also see the connection cut before it reads the answer.
            assert_eq!(r.status(), 413);
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        app.complete_bodies(),
        0,
        "a cut body must never arrive looking complete"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_over_the_limit_is_refused_before_100() {
    let app = Upstream::start("app").await;
    let gw = Gateway::start(&config(&app, "")).await;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.ports.http)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"POST /api/jobs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 999999\r\nExpect: 100-continue\r\n\r\n").unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert_eq!(app.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_content_types_get_415_and_bodiless_requests_pass() {
    let app = Upstream::start("app").await;
    let gw = Gateway::start(&config(&app, "")).await;
    let c = gw.client();
    let r = c
        .post(gw.https_url("/api/jobs"))
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&r, "x-frame-options"),
        Some("DENY"),
        "security headers on the 415"
    );
    assert!(header(&r, "x-request-id").is_some());
    gateway_error(r, 415).await;
    let r = c
        .post(gw.https_url("/api/jobs"))
        .body("{}")
        .send()
        .await
        .unwrap();
    gateway_error(r, 415).await;
    let r = c
        .post(gw.https_url("/api/jobs"))
        .header("content-type", "application/json; charset=utf-8")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        c.get(gw.https_url("/api/jobs"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = gw.metrics().await;
    assert!(
        metrics
            .contains("gateway_requests_rejected_total{reason=\"content_type\",route=\"api\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_rules_refuse_with_403_on_the_client_ip_from_the_trusted_proxy_logic() {
    let app = Upstream::start("app").await;
    let gw = Gateway::start(&config(&app, "")).await;
    let c = gw.client();
    gateway_error(c.get(gw.https_url("/blocked")).send().await.unwrap(), 403).await;
    gateway_error(c.get(gw.https_url("/internal")).send().await.unwrap(), 403).await;
    // A spoofed X-Forwarded-For from an untrusted peer does not get in.
    let r = c
        .get(gw.https_url("/internal"))
        .header("x-forwarded-for", "10.1.2.3")
        .send()
        .await
        .unwrap();
    gateway_error(r, 403).await;

    let trusted = Gateway::start(&config(&app, "trusted_proxies = [\"127.0.0.1/32\"]")).await;
    let c = trusted.client();
    let r = c
        .get(trusted.https_url("/internal"))
        .header("x-forwarded-for", "10.1.2.3")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "behind a trusted proxy the client is 10.1.2.3"
    );
    assert_eq!(app.hits(), 1);
}

#[test]
fn star_with_credentials_is_a_config_error_naming_both_keys() {
    let work = crate::harness::Workdir::new();
    let text = "[upstreams.app]\nservers = [\"127.0.0.1:9\"]\n\n[cors.open]\nallow_origins = [\"*\"]\nallow_credentials = true\n\n[cors.typo]\nallow_origins = [\"app.example.com\"]\n";
    let path = work.write("gateway.toml", text);
    let (code, _, err) = crate::harness::check(&path);
    assert_eq!(code, 78);
    assert!(err.contains(":6:1: cors.open.allow_credentials: allow_origins = [\"*\"] with allow_credentials = true"), "{err}");
    assert!(
        err.contains(":9:18: cors.typo.allow_origins[0]: `app.example.com` is not an origin"),
        "{err}"
    );
}

/// Sends raw bytes on a fresh connection and returns what came back: everything until the
/// server closes, or the first response when it keeps the connection open.
fn raw(port: u16, request: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    read_answer(&mut s)
}

/// One HTTP/1.1 answer: its head and its `Content-Length` of body; for an answer that closes
/// the connection, everything up to the close.
fn read_answer(s: &mut std::net::TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let complete = out.len() >= end + 4 + length;
            if complete && !text[..end].contains("connection: close") {
                break;
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The gateway counted `count` refusals for `reason` before any route was chosen.
async fn assert_refused_before_routing(gw: &Gateway, reason: &str, count: usize) {
    let metrics = gw.metrics().await;
    let line =
        format!("gateway_requests_rejected_total{{reason=\"{reason}\",route=\"-\"}} {count}");
    assert!(metrics.contains(&line), "no `{line}` in {metrics}");
}

/// Content-Length with Transfer-Encoding, in either order: the two framings a smuggling
/// attack plays against each other. The gateway answers its own 400 and closes the
/// connection, so neither the request nor one smuggled behind it reaches the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_is_refused_and_nothing_is_smuggled() {
    let app = Upstream::start("app").await;
    let gw = Gateway::start(&config(&app, "")).await;
    for head in [
        "Content-Length: 4\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\ncontent-length: 4",
    ] {
        let request = format!(
            "POST /api/jobs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{head}\r\n\r\n0\r\n\r\nGET /api/smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n"
        );
        let answer = raw(gw.ports.http, request.as_bytes());
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "the smuggled request must not be answered: {answer}"
        );
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        let lower = answer.to_ascii_lowercase();
        assert!(lower.contains("connection: close"), "{answer}");
        assert!(lower.contains("x-request-id: "), "{answer}");
        assert!(
            lower.contains("x-content-type-options: nosniff"),
            "{answer}"
        );
        assert!(
            answer.contains(
                "\"error\":\"a request may not have both Content-Length and Transfer-Encoding\""
            ),
            "{answer}"
        );
    }
    assert_eq!(app.hits(), 0, "nothing reached the app");
    assert_refused_before_routing(&gw, "smuggling", 2).await;
}

/// An HTTP/1.1 request must name its host in `Host`, even with an absolute-form target, and
/// a `Host` must be a host (RFC 9112 §3.2: a server answers 400 when it is missing or
/// invalid). One that named none took whichever route matches any host, and a `Host` of
/// markup or a path went upstream in `X-Forwarded-Host`. An HTTP/1.0 request may leave it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_valid_host_is_refused() {
    let app = Upstream::start("app").await;
    let gw = Gateway::start(&config(&app, "")).await;
    let refused: [(&[u8], &str); 6] = [
        (b"GET /api/x HTTP/1.1\r\n\r\n", "missing host header"),
        (
            b"GET http://localhost/api/x HTTP/1.1\r\n\r\n",
            "missing host header",
        ),
        (
            b"GET /api/x HTTP/1.1\r\nHost: \r\n\r\n",
            "invalid host header",
        ),
        (
            b"GET /api/x HTTP/1.1\r\nHost: a b\r\n\r\n",
            "invalid host header",
        ),
        (
            b"GET /api/x HTTP/1.1\r\nHost: evil.example/x?\r\n\r\n",
            "invalid host header",
        ),
        (
            b"GET /api/x HTTP/1.0\r\nHost: \"><script>\r\n\r\n",
            "invalid host header",
        ),
    ];
    for (request, error) in refused {
        let what = String::from_utf8_lossy(request);
        let answer = raw(gw.ports.http, request);
        assert!(answer.starts_with("HTTP/1.1 400"), "{what}: {answer}");
        let lower = answer.to_ascii_lowercase();
        let error = format!("\"error\":\"{error}");
        for needle in [
            "connection: close",
            "x-request-id: ",
            "x-content-type-options: nosniff",
            error.as_str(),
            "\"request_id\":\"",
        ] {
            assert!(lower.contains(needle), "{what}: no `{needle}` in {answer}");
        }
    }
    assert_eq!(
        app.hits(),
        0,
        "a request without a valid host reached the app"
    );
    assert_refused_before_routing(&gw, "bad_request", refused.len()).await;
    let served: [&[u8]; 5] = [
        b"GET /api/x HTTP/1.0\r\n\r\n",
        b"GET /api/x HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"GET /api/x HTTP/1.1\r\nHost: Api.Example.com:8080\r\n\r\n",
        b"GET /api/x HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
        b"GET http://localhost/api/x HTTP/1.1\r\nHost: localhost\r\n\r\n",
    ];
    for request in served {
        let what = String::from_utf8_lossy(request);
        let answer = raw(gw.ports.http, request);
        assert!(answer.starts_with("HTTP/1.1 200"), "{what}: {answer}");
    }
    assert_eq!(app.hits(), served.len());
}

/// TRACE echoes a request back, cookies and credentials included (cross-site tracing): a
/// route without `methods` refuses it with 405, as nginx does, and never sends it to the app.
/// A route that lists it gets it; one that lists others answers 405 with its own `Allow`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_is_refused_unless_a_route_lists_it() {
    let app = Upstream::start("app").await;
    let text = format!(
        "{TLS_BASICS}\n[upstreams.app]\nservers = [\"{}\"]\n\n\
         [[routes]]\nname = \"open\"\npath = \"/open\"\nupstream = \"app\"\n\n\
         [[routes]]\nname = \"traced\"\npath = \"/traced\"\nmethods = [\"GET\", \"TRACE\"]\nupstream = \"app\"\n\n\
         [[routes]]\nname = \"listed\"\npath = \"/listed\"\nmethods = [\"POST\"]\nupstream = \"app\"\n",
        app.addr
    );
    let gw = Gateway::start(&text).await;
    let cases = [
        (
            "TRACE",
            "/open",
            405,
            Some("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        ),
        ("TRACE", "/listed", 405, Some("POST")),
        ("TRACE", "/traced", 200, None),
        ("GET", "/open", 200, None),
        ("DELETE", "/open", 200, None),
    ];
    for (method, path, status, allow) in cases {
        let request = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nCookie: s=1\r\n\r\n");
        let answer = raw(gw.ports.http, request.as_bytes());
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{method} {path}: {answer}"
        );
        let lower = answer.to_ascii_lowercase();
        if let Some(allow) = allow {
            assert!(
                lower.contains(&format!("allow: {}", allow.to_ascii_lowercase())),
                "{method} {path}: {answer}"
            );
            for needle in [
                "\"request_id\":\"",
                "x-request-id: ",
                "x-content-type-options: nosniff",
            ] {
                assert!(
                    lower.contains(needle),
                    "{method} {path}: no `{needle}` in {answer}"
                );
            }
        }
    }
    assert_eq!(app.hits(), 3, "only the served requests reached the app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_uris_and_request_heads_get_414_and_431() {
    let app = Upstream::start("app").await;
    let gw = Gateway::start(&config(
        &app,
        "max_uri_bytes = \"1KiB\"\nmax_header_bytes = \"2KiB\"\nmax_headers = 20",
    ))
    .await;
    let long_uri = format!(
        "GET /api/{} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "a".repeat(1100)
    );
    let answer = raw(gw.ports.http, long_uri.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 414"), "{answer}");
    assert!(
        answer.contains("x-content-type-options: nosniff"),
        "security headers: {answer}"
    );
    let big = format!(
        "GET /api HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "b".repeat(2100)
    );
    assert!(raw(gw.ports.http, big.as_bytes()).starts_with("HTTP/1.1 431"));
    let many: String = (0..25).map(|i| format!("X-{i}: v\r\n")).collect();
    let request = format!("GET /api HTTP/1.1\r\nHost: localhost\r\n{many}\r\n");
    assert!(raw(gw.ports.http, request.as_bytes()).starts_with("HTTP/1.1 431"));
    assert_eq!(app.hits(), 0);
    let metrics = gw.metrics().await;
    assert!(
        metrics
            .contains("gateway_requests_rejected_total{reason=\"header_too_large\",route=\"-\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_normalised_before_routing_and_sent_upstream_normalised() {
    let app = Upstream::start("app").await;
    let gw = Gateway::start(&config(&app, "")).await;
    // Every spelling of /blocked meets /blocked's rules (deny_ips covers 127.0.0.1).
    for path in [
        "/public/../blocked",
        "/x/%2e%2E/blocked",
        "/%62locked",
        "//blocked/",
    ] {
        let answer = raw(
            gw.ports.http,
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
        );
        assert!(answer.starts_with("HTTP/1.1 403"), "{path}: {answer}");
    }
    // An encoded slash or a backslash is refused: servers disagree on what it means.
    for path in [
        "/api/a%2Fb",
        "/api/a%5cb",
        "/api/%zz",
        "/blocked;x",
        "/x/..;/blocked",
    ] {
        let answer = raw(
            gw.ports.http,
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes(),
        );
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
    }
    assert_eq!(app.hits(), 0);
    let s = seen(
        gw.client()
            .get(gw.http_url("/api//jobs/./x/../y?q=1"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s.path(), s.query()),
        ("/api/jobs/y", Some("q=1")),
        "the app gets the normalised path"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_checked_against_the_schema_and_forwarded_unchanged_when_valid() {
    let app = Upstream::start("app").await;
    let work = crate::harness::Workdir::new();
    work.cert("main", &["localhost"]);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(
        root.join("examples/schemas/job.json"),
        work.path().join("job.json"),
    )
    .unwrap();
    let text = format!(
        "{TLS_BASICS}\n[upstreams.app]\nservers = [\"{}\"]\n\n[[routes]]\nname = \"jobs\"\npath = \"/jobs\"\nmethods = [\"GET\", \"POST\"]\nmax_body = \"200KiB\"\nschema = \"job.json\"\nupstream = \"app\"\n",
        app.addr
    );
    let gw = Gateway::start_in(work, &text, &[]).await;
    let valid = br#"{ "workflow": "render",  "callback_url": "https://cb.example/done" }"#;
    let expected = crate::harness::hex(&<sha2::Sha256 as sha2::Digest>::digest(valid));
    for client in [
        gw.client(),
        gw.client_builder().http1_only().build().unwrap(),
    ] {
        let r = client
            .post(gw.https_url("/jobs"))
            .body(&valid[..])
            .send()
            .await
            .unwrap();
        assert_eq!(
            seen(r).await.body_sha256(),
            expected,
            "forwarded byte for byte"
        );
    }

    // A large valid body arriving in many reads is held back whole, then forwarded unchanged
    // (HTTP/1.1 and HTTP/2).
    let padded = format!(
        r#"{{"workflow": "render",{}"callback_url": "https://cb.example/done"}}"#,
        " ".repeat(150_000)
    );
    let expected = crate::harness::hex(&<sha2::Sha256 as sha2::Digest>::digest(padded.as_bytes()));
    for client in [
        gw.client(),
        gw.client_builder().http1_only().build().unwrap(),
    ] {
        let chunks: Vec<Result<Bytes, std::io::Error>> = padded
            .as_bytes()
            .chunks(8 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let r = client
            .post(gw.https_url("/jobs"))
            .header("content-length", padded.len())
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(
            seen(r).await.body_sha256(),
            expected,
            "a large body, forwarded whole"
        );
    }

    let long = "w".repeat(5000);
    let invalid = format!(r#"{{"workflow":"{long}","callback_url":"ftp://files.example/x"}}"#);
    let r = gw
        .client()
        .post(gw.https_url("/jobs"))
        .body(invalid)
        .send()
        .await
        .unwrap();
    let body = gateway_error(r, 400).await;
    let pointers: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert!(
        pointers.contains(&"/workflow") && pointers.contains(&"/callback_url"),
        "{body}"
    );
    assert!(
        !body.to_string().contains(&long[..200]),
        "a huge value was echoed"
    );

    let r = gw
        .client()
        .post(gw.https_url("/jobs"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    let body = gateway_error(r, 400).await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("not valid JSON"),
        "{body}"
    );
    let r = gw
        .client()
        .post(gw.https_url("/jobs"))
        .send()
        .await
        .unwrap();
    gateway_error(r, 400).await;
    assert_eq!(
        gw.client()
            .get(gw.https_url("/jobs"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        app.complete_bodies(),
        5,
        "four valid bodies and the GET; no invalid body arrived whole"
    );
}

/// A slowloris from one address: hundreds of connections dribbling a request head. The ones
/// over max_connections_per_ip are closed at once, and a normal client keeps being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_from_one_address_does_not_starve_other_clients() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = Upstream::start("app").await;
    let gw = Gateway::start(&config(&app, "max_connections_per_ip = 50")).await;
    let target: std::net::SocketAddr = format!("127.0.0.1:{}", gw.ports.http).parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..300 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut stream = socket.connect(target).await.unwrap();
        let _ = stream
            .write_all(b"GET /api HTTP/1.1\r\nHost: localhost\r\nX-Slow: a")
            .await;
        held.push(stream);
    }
    // Normal clients from another address are answered promptly throughout.
    let c = gw.client();
    for _ in 0..5 {
        let started = std::time::Instant::now();
        assert_eq!(
            c.get(gw.http_url("/api")).send().await.unwrap().status(),
            200
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
        for s in held.iter_mut().take(50) {
            let _ = s.write_all(b"a").await;
        }
    }
    // The attacker kept 50 connections; the others were closed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut closed = 0;
    for s in held.iter_mut() {
        let mut buf = [0u8; 1];
        // Closed: end of stream or reset. Open: nothing to read yet.
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(20), s.read(&mut buf)).await
        {
            closed += 1;
        }
    }
    assert_eq!(closed, 250, "connections over the per-IP cap are closed");
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("gateway_connections_rejected_total 250"),
        "{metrics}"
    );
}

/// A slowloris that stays under every per-read timeout: each connection sends a byte of its
/// head every 200 ms but never finishes it. `timeouts.header_read` closes every one of them
/// at the deadline, without a response, while normal clients (and a slow body, which has no
/// head deadline) are served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_must_be_read_whole_within_header_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const DRIBBLERS: usize = 200;
    let app = Upstream::start("app").await;
    let gw = Gateway::start(&config(
        &app,
        "max_connections_per_ip = 1000\ntimeouts = { header_read = \"1s\" }",
    ))
    .await;
    let target: std::net::SocketAddr = format!("127.0.0.1:{}", gw.ports.http).parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..DRIBBLERS {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut stream = socket.connect(target).await.unwrap();
        stream
            .write_all(b"GET /api HTTP/1.1\r\nHost: localhost\r\nX-Slow: a")
            .await
            .unwrap();
        held.push(stream);
    }
    let dribbler = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let mut dead = vec![false; held.len()];
        while started.elapsed() < Duration::from_millis(2500) {
            for (i, s) in held.iter_mut().enumerate() {
                if !dead[i] && s.write_all(b"a").await.is_err() {
                    dead[i] = true;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        held
    });

    // A slow body: the head at once, the body across the head deadline.
    let mut upload = tokio::net::TcpStream::connect(target).await.unwrap();
    upload
        .write_all(b"POST /api HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\n{\"a\":")
        .await
        .unwrap();
    let c = gw.client();
    for _ in 0..8 {
        let started = std::time::Instant::now();
        let status = c.get(gw.http_url("/api")).send().await.unwrap().status();
        assert_eq!(status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    upload.write_all(b"12}").await.unwrap();
    let mut answer = vec![0u8; 12];
    upload.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200", "the slow body was served");

    let mut held = dribbler.await.unwrap();
    let mut closed = 0;
    for s in held.iter_mut() {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(50), s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => closed += 1,
            Ok(Ok(n)) => panic!(
                "a dribbled head was answered: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(_) => {}
        }
    }
    assert_eq!(
        closed, DRIBBLERS,
        "every dribbling connection is closed at the deadline"
    );
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(&format!(
            "gateway_requests_rejected_total{{reason=\"header_timeout\",route=\"-\"}} {DRIBBLERS}"
        )),
        "{metrics}"
    );
}

/// A request's `Content-Length` is digits: leading zeros are still that number, and a field
/// repeated with the same number is that number once; the body is framed by it (the app gets
/// it whole, and the connection serves the next request). A list, even of equal values, is
/// refused with the gateway's 400, stricter than RFC 9110 §8.6 allows (repeats that differ
/// are in `malformed_heads_get_the_gateways_json_400_and_close`). The vendored pingora-core reads one field of digits without its general parse
/// (patch 15); the repeat here, and an upstream's lists in
/// `connections::the_upstream_response_decides_whether_its_connection_is_reused`, must still
/// take the general one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_content_length_is_one_field_of_digits() {
    let app = Upstream::start("app").await;
    let gw = Gateway::start(&config(&app, "")).await;
    let body = r#"{"a":1}"#;
    let body_sha = crate::harness::hex(&<sha2::Sha256 as sha2::Digest>::digest(body));
    let request = |fields: &str| {
        format!(
            "POST /api/jobs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{fields}\r\n\r\n{body}"
        )
    };
    for fields in [
        "Content-Length: 7",
        "Content-Length: 007",
        "Content-Length: 7\r\nContent-Length: 7",
    ] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.ports.http)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        for round in 0..2 {
            s.write_all(request(fields).as_bytes()).unwrap();
            let answer = read_answer(&mut s);
            assert!(
                answer.starts_with("HTTP/1.1 200"),
                "{fields} ({round}): {answer}"
            );
            let echo: serde_json::Value = answer
                .split_once("\r\n\r\n")
                .and_then(|(_, b)| serde_json::from_str(b).ok())
                .unwrap_or_else(|| panic!("{fields} ({round}): no echo in {answer}"));
            assert_eq!(echo["body_len"], 7, "{fields} ({round}): {echo}");
            assert_eq!(echo["body_sha256"], body_sha.as_str(), "{fields}: {echo}");
        }
    }
    assert_eq!(app.hits(), 6);
    for fields in ["Content-Length: 7, 7", "Content-Length: 7,7"] {
        let answer = raw(gw.ports.http, request(fields).as_bytes());
        assert!(answer.starts_with("HTTP/1.1 400"), "{fields}: {answer}");
        assert!(
            answer.contains("invalid body framing"),
            "{fields}: {answer}"
        );
    }
    assert_eq!(app.hits(), 6, "a refused request reached the app");
}

/// Heads that servers read differently, each sent as raw bytes: every one gets the gateway's
/// JSON 400 with a request id and the security headers, its connection is closed, and the
/// app never sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_heads_get_the_gateways_json_400_and_close() {
    let app = Upstream::start("app").await;
    let gw = Gateway::start(&config(&app, "")).await;
    let cases: &[(&str, &str)] = &[
        (
            "differing repeated Content-Length",
            "Content-Length: 4\r\nContent-Length: 5\r\n",
        ),
        ("non-numeric Content-Length", "Content-Length: 4x\r\n"),
        ("signed Content-Length", "Content-Length: +4\r\n"),
        (
            "Transfer-Encoding not ending in chunked",
            "Transfer-Encoding: chunked, identity\r\n",
        ),
        ("whitespace before the colon", "Content-Length : 4\r\n"),
        ("obs-fold", "X-Folded: a\r\n b\r\n"),
        ("control character in a value", "X-Bad: a\u{1}b\r\n"),
        ("control character in a name", "X-B\u{1}d: ab\r\n"),
    ];
    for (what, fields) in cases {
        let request = format!(
            "POST /api/jobs HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n{fields}\r\nabcd"
        );
        let answer = raw(gw.ports.http, request.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 400"), "{what}: {answer}");
        let lower = answer.to_ascii_lowercase();
        for needle in [
            "connection: close",
            "content-type: application/json",
            "x-content-type-options: nosniff",
            "x-request-id: ",
            "\"request_id\":\"",
        ] {
            assert!(lower.contains(needle), "{what}: no `{needle}` in {answer}");
        }
    }
    assert_eq!(app.hits(), 0, "a malformed head reached the app");
    assert_refused_before_routing(&gw, "bad_request", cases.len()).await;
}
