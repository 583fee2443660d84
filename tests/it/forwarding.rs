//! What the upstream is told about the client, and what the access log says.

use crate::harness::{hex, pattern_bytes, seen, Gateway, Upstream, TLS_BASICS};
use sha2::{Digest, Sha256};

fn config(upstream: &Upstream, trusted: &str) -> String {
    let server = TLS_BASICS.replace(
        "redirect_https = false",
        &format!("redirect_https = false\ntrusted_proxies = [{trusted}]"),
    );
    format!("{server}\n[upstreams.app]\nservers = [\"{}\"]\n\n[[routes]]\nname = \"all\"\nupstream = \"app\"\n", upstream.addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_is_replaced_by_the_peer() {
    let upstream = Upstream::start("app").await;
    let gw = Gateway::start(&config(&upstream, "")).await;
    let r = gw
        .client()
        .get(gw.https_url("/who?token=s3cret"))
        .header("x-forwarded-for", "1.2.3.4")
        .header("x-forwarded-host", "evil.test")
        .header("x-forwarded-proto", "http")
        .header("x-request-id", "chosen-by-client")
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let s = seen(r).await;
    assert_eq!(s.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(s.header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(
        s.header("x-forwarded-host").as_deref(),
        Some(format!("localhost:{}", gw.ports.https).as_str())
    );
    assert_ne!(
        id, "chosen-by-client",
        "an untrusted peer does not choose the request id"
    );
    assert_eq!(id.len(), 32);
    assert_eq!(
        s.header("x-request-id"),
        Some(id.clone()),
        "the upstream gets the same id"
    );

    let line = gw.access_line(&id).await;
    assert_eq!(line["client_ip"], "127.0.0.1");
    assert_eq!(line["path"], "/who", "the query string is never logged");
    assert!(!line.to_string().contains("s3cret"));
    assert_eq!(line["status"], 200);
    assert_eq!(line["route"], "all");
    assert_eq!(line["upstream"], "app");
    assert_eq!(line["decision"], "proxied");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["host"], "localhost");
    for field in ["time", "bytes", "duration_ms"] {
        assert!(!line[field].is_null(), "{field} missing in {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_chain_is_walked_and_appended_to() {
    let upstream = Upstream::start("app").await;
    let gw = Gateway::start(&config(&upstream, "\"127.0.0.1/32\", \"10.0.0.0/8\"")).await;
    let c = gw.client();
    let r = c
        .get(gw.https_url("/"))
        .header("x-forwarded-for", "198.51.100.1, 203.0.113.9, 10.0.0.5")
        .header("x-forwarded-proto", "http")
        .header("x-forwarded-host", "public.example.test")
        .header("x-request-id", "lb-7f3a.2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "lb-7f3a.2");
    let s = seen(r).await;
    assert_eq!(
        s.header("x-forwarded-for").as_deref(),
        Some("198.51.100.1, 203.0.113.9, 10.0.0.5, 127.0.0.1")
    );
    assert_eq!(s.header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        s.header("x-forwarded-host").as_deref(),
        Some("public.example.test")
    );
    assert_eq!(s.header("x-request-id").as_deref(), Some("lb-7f3a.2"));
    // The right-most address that is not a trusted proxy is the client.
    assert_eq!(
        gw.access_line("lb-7f3a.2").await["client_ip"],
        "203.0.113.9"
    );

    // Even from a trusted proxy, an id that is not a sane token is replaced.
    let r = c
        .get(gw.https_url("/"))
        .header("x-request-id", "a b<script>")
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_ne!(id, "a b<script>");
    assert_eq!(seen(r).await.header("x-request-id"), Some(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_a_client_makes_up_about_its_origin_or_target_never_reach_the_app() {
    let upstream = Upstream::start("app").await;
    let gw = Gateway::start(&config(&upstream, "")).await;
    let r = gw
        .client()
        .get(gw.http_url("/"))
        .header("forwarded", "for=10.0.0.1;proto=https;host=evil.test")
        .header("x-real-ip", "10.0.0.1")
        .header("true-client-ip", "10.0.0.1")
        .header("x-forwarded-port", "443")
        .header("x-original-url", "/admin")
        .header("x-http-method-override", "DELETE")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert!(
        r.headers().get("strict-transport-security").is_none(),
        "an untrusted X-Forwarded-Proto is not HTTPS"
    );
    let s = seen(r).await;
    for name in [
        "forwarded",
        "true-client-ip",
        "x-forwarded-port",
        "x-original-url",
        "x-http-method-override",
    ] {
        assert_eq!(s.header(name), None, "{name} reached the app");
    }
    assert_eq!(
        s.header("x-real-ip").as_deref(),
        Some("127.0.0.1"),
        "the gateway says who the client is"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_tls_terminating_proxy_the_request_counts_as_https() {
    let upstream = Upstream::start("app").await;
    let gw = Gateway::start(&config(&upstream, "\"127.0.0.1/32\"")).await;
    let r = gw
        .client()
        .get(gw.http_url("/"))
        .header("x-forwarded-proto", "https")
        .header("forwarded", "for=198.51.100.1")
        .send()
        .await
        .unwrap();
    assert!(
        r.headers().get("strict-transport-security").is_some(),
        "HSTS behind a TLS-terminating proxy"
    );
    let s = seen(r).await;
    assert_eq!(
        s.header("forwarded").as_deref(),
        Some("for=198.51.100.1"),
        "a trusted proxy's claims pass"
    );
}

/// Hop-by-hop headers (RFC 9110 section 7.6.1), and what the client's `Connection` names, end
/// at the gateway; the rest of the request reaches the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_and_the_ones_connection_names_never_reach_the_app() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = Upstream::start("app").await;
    let gw = Gateway::start(&config(&upstream, "")).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.ports.http))
        .await
        .unwrap();
    s.write_all(
        b"GET /hop HTTP/1.1\r\nHost: app.test\r\nConnection: close, x-hop-nominated\r\n\
          X-Hop-Nominated: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\
          TE: trailers\r\nTrailer: x-t\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\n\
          Proxy-Authenticate: Basic\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nX-Kept: yes\r\n\r\n",
    )
    .await
    .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        s.read_to_end(&mut response),
    )
    .await
    .expect("the gateway closes after Connection: close")
    .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let body = &response[response.find("\r\n\r\n").expect("a head") + 4..];
    let echoed: serde_json::Value = serde_json::from_str(body).expect("the app's JSON echo");
    for name in [
        "x-hop-nominated",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-authenticate",
        "http2-settings",
        "upgrade",
    ] {
        assert!(
            echoed["headers"][name].is_null(),
            "{name} reached the app: {echoed}"
        );
    }
    assert_eq!(echoed["headers"]["x-kept"], "yes", "{echoed}");
}

/// Bodies many times larger than the pipes between the proxy's two halves (four tasks each
/// way) and its socket reads: every byte arrives once and in order, both ways, over HTTP/1.1
/// (the two halves' pipes) and HTTP/2, one request after another on one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_through_whole_both_ways() {
    let upstream = Upstream::start("app").await;
    let conf =
        config(&upstream, "").replace("name = \"all\"", "name = \"all\"\nmax_body = \"8MiB\"");
    let gw = Gateway::start(&conf).await;
    let size = 6 * 1024 * 1024 + 7;
    let expected = hex(&Sha256::digest(pattern_bytes(size)));
    let h1 = gw.client_builder().http1_only().build().unwrap();
    for (client, url) in [
        (&h1, gw.http_url(&format!("/dl/bytes?n={size}"))),
        (&h1, gw.https_url(&format!("/dl/bytes?n={size}"))),
        (&gw.client(), gw.https_url(&format!("/dl/bytes?n={size}"))),
    ] {
        for round in 0..2 {
            let r = client.get(&url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let body = r.bytes().await.unwrap();
            assert_eq!(body.len(), size, "{url} round {round}");
            assert_eq!(hex(&Sha256::digest(&body)), expected, "{url} round {round}");
        }
        let upload = pattern_bytes(size);
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = upload
            .chunks(64 * 1024)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        let r = client
            .post(url.replace("/dl/bytes", "/up"))
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "upload to {url}");
        let s = seen(r).await;
        assert_eq!(s.0["body_len"], size, "upload to {url}");
        assert_eq!(s.body_sha256(), expected, "upload to {url}");
    }
}
