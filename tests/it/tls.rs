//! TLS termination: certificates by SNI, the minimum version, ALPN, and the HTTPS redirect.

use std::net::SocketAddr;

use crate::harness::{gateway_error, seen, Gateway, Upstream, Workdir};

fn two_cert_config(upstream: &Upstream, min_version: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:{{HTTP}}"]
tls_listen = ["127.0.0.1:{{HTTPS}}"]

[admin]
listen = "127.0.0.1:{{ADMIN}}"

[tls]
min_version = "{min_version}"
[[tls.certificates]]
cert = "certs/first/dev.pem"
key = {{ file = "certs/first/dev-key.pem" }}
[[tls.certificates]]
cert = "certs/second/dev.pem"
key = {{ file = "certs/second/dev-key.pem" }}

[upstreams.app]
servers = ["{}"]

[[routes]]
name = "all"
upstream = "app"
"#,
        upstream.addr
    )
}

async fn two_cert_gateway(upstream: &Upstream, min_version: &str) -> Gateway {
    let work = Workdir::new();
    work.cert("first", &["first.test", "localhost"]);
    work.cert("second", &["second.test", "*.wild.test"]);
    Gateway::start_in(work, &two_cert_config(upstream, min_version), &[]).await
}

/// A client that trusts only `certs/NAME` and resolves `host` to the gateway.
fn client_trusting(gw: &Gateway, name: &str, host: &str) -> reqwest::Client {
    let addr: SocketAddr = format!("127.0.0.1:{}", gw.ports.https).parse().unwrap();
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&gw.cert_pem(name)).unwrap())
        .resolve(host, addr)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_is_chosen_by_sni_wildcards_included_and_the_first_is_the_default() {
    let upstream = Upstream::start("app").await;
    let gw = two_cert_gateway(&upstream, "1.2").await;
    let port = gw.ports.https;
    let url = |host: &str| format!("https://{host}:{port}/");

    // Each name is served its own certificate: a client trusting only that one succeeds...
    let ok = client_trusting(&gw, "first", "first.test")
        .get(url("first.test"))
        .send()
        .await;
    assert_eq!(ok.expect("first.test with the first cert").status(), 200);
    let ok = client_trusting(&gw, "second", "second.test")
        .get(url("second.test"))
        .send()
        .await;
    assert_eq!(ok.expect("second.test with the second cert").status(), 200);
    let ok = client_trusting(&gw, "second", "api.wild.test")
        .get(url("api.wild.test"))
        .send()
        .await;
    assert_eq!(ok.expect("a wildcard SAN").status(), 200);

    // ...and a client trusting only the other one fails, so the choice really was made by SNI.
    let wrong = client_trusting(&gw, "first", "second.test")
        .get(url("second.test"))
        .send()
        .await;
    assert!(
        wrong.is_err(),
        "second.test must not be served the first certificate"
    );
    // A wildcard covers one label only: a.b.wild.test gets the default (first) certificate.
    let deep = client_trusting(&gw, "second", "a.b.wild.test")
        .get(url("a.b.wild.test"))
        .send()
        .await;
    assert!(deep.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_13_refuses_a_tls12_client_and_12_accepts_it() {
    let upstream = Upstream::start("app").await;
    let strict = two_cert_gateway(&upstream, "1.3").await;
    let tls12_only = |gw: &Gateway| {
        gw.client_builder()
            .max_tls_version(reqwest::tls::Version::TLS_1_2)
            .build()
            .unwrap()
    };
    let client = tls12_only(&strict);
    assert!(
        client.get(strict.https_url("/")).send().await.is_err(),
        "TLS 1.2 must be refused"
    );
    assert_eq!(
        strict
            .client()
            .get(strict.https_url("/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let lenient = two_cert_gateway(&upstream, "1.2").await;
    let client = tls12_only(&lenient);
    assert_eq!(
        client
            .get(lenient.https_url("/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_offers_h2_and_http11() {
    let upstream = Upstream::start("app").await;
    let gw = two_cert_gateway(&upstream, "1.2").await;
    let r = gw.client().get(gw.https_url("/")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let h1 = gw.client_builder().http1_only().build().unwrap();
    let r = h1.get(gw.https_url("/")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_redirected_with_308_keeping_path_and_query() {
    let upstream = Upstream::start("app").await;
    let gw = two_cert_gateway(&upstream, "1.2").await;
    let c = gw.client();
    let r = c
        .post(gw.http_url("/api/x?y=1&z=%20"))
        .header("host", "shop.example.test:8080")
        .body("payload")
        .send()
        .await
        .unwrap();
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(
        location,
        format!(
            "https://shop.example.test:{}/api/x?y=1&z=%20",
            gw.ports.https
        )
    );
    let body = gateway_error(r, 308).await;
    assert_eq!(body["location"], location.as_str());
    assert_eq!(upstream.hits(), 0, "a redirected request is not proxied");

    // A Host that is not a host name is not echoed into Location.
    let r = c
        .get(gw.http_url("/"))
        .header("host", "evil.test/\"<x>")
        .send()
        .await
        .unwrap();
    gateway_error(r, 400).await;

    // Over HTTPS the request is proxied.
    let s = seen(c.get(gw.https_url("/api/x?y=1")).send().await.unwrap()).await;
    assert_eq!(s.header("x-forwarded-proto").as_deref(), Some("https"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_close_to_expiry_is_warned_about_and_its_expiry_exported() {
    let upstream = Upstream::start("app").await;
    let work = Workdir::new();
    work.cert_for_days("main", &["localhost"], 5);
    let config = format!(
        "{}\n[upstreams.app]\nservers = [\"{}\"]\n[[routes]]\nname = \"all\"\nupstream = \"app\"\n",
        crate::harness::TLS_BASICS,
        upstream.addr
    );
    let path = work.write(
        "check.toml",
        &config
            .replace("{HTTP}", "18080")
            .replace("{HTTPS}", "18443")
            .replace("{ADMIN}", "19901"),
    );
    let (code, _, err) = crate::harness::check(&path);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(":1: warning: tls.certificates[0].cert: `certs/main/dev.pem` expires on"),
        "{err}"
    );
    assert!(err.contains("in 5 day(s)"), "{err}");

    let gw = Gateway::start_in(work, &config, &[]).await;
    let metrics = gw.metrics().await;
    let expiry: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "gateway_tls_cert_expiry_timestamp_seconds{cert=\"certs/main/dev.pem\"} ",
            )
        })
        .and_then(|v| v.parse().ok())
        .expect("the expiry metric");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (expiry - now - 5.0 * 86_400.0).abs() < 120.0,
        "expiry {expiry} vs now {now}"
    );
    assert!(
        gw.stderr().contains("in 5 day(s)"),
        "warned at start too: {}",
        gw.stderr()
    );
}
