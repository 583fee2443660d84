//! Host and prefix routing, 404 and 405 through the real binary.

use crate::harness::{gateway_error, seen, Gateway, Upstream, TLS_BASICS};

async fn three_upstreams() -> (Upstream, Upstream, Upstream) {
    (
        Upstream::start("api").await,
        Upstream::start("jobs").await,
        Upstream::start("site").await,
    )
}

fn config(api: &Upstream, jobs: &Upstream, site: &Upstream) -> String {
    format!(
        r#"{TLS_BASICS}
[upstreams.api]
servers = ["{}"]
[upstreams.jobs]
servers = ["{}"]
[upstreams.site]
servers = ["{}"]

[[routes]]
name = "api"
path = "/api"
upstream = "api"

[[routes]]
name = "jobs"
path = "/api/jobs"
methods = ["POST"]
upstream = "jobs"

[[routes]]
name = "site_any_subdomain"
host = "*.example.test"
upstream = "site"

[[routes]]
name = "site_www"
host = "www.example.test"
path = "/"
upstream = "jobs"
"#,
        api.addr, jobs.addr, site.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_match_on_segment_boundaries_and_the_longest_wins() {
    let (api, jobs, site) = three_upstreams().await;
    let gw = Gateway::start(&config(&api, &jobs, &site)).await;
    let c = gw.client();

    let s = seen(c.get(gw.https_url("/api")).send().await.unwrap()).await;
    assert_eq!(s.server(), "api");
    let s = seen(
        c.get(gw.https_url("/api/users?page=2"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s.server(), s.path(), s.query()),
        ("api", "/api/users", Some("page=2"))
    );
    let s = seen(
        c.post(gw.https_url("/api/jobs/7"))
            .body("{}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s.server(), "jobs");

    // `/apix` is not under `/api`: no route, the gateway's JSON 404.
    let body = gateway_error(c.get(gw.https_url("/apix")).send().await.unwrap(), 404).await;
    assert_eq!(body["error"], "no route for this host and path");
    assert_eq!(
        api.hits() + jobs.hits() + site.hits(),
        3,
        "the 404 must not reach an upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exact_host_beats_a_wildcard_and_a_wildcard_needs_a_label() {
    let (api, jobs, site) = three_upstreams().await;
    let gw = Gateway::start(&config(&api, &jobs, &site)).await;
    let c = gw.client();
    let get = |host: &'static str| c.get(gw.http_url("/page")).header("host", host).send();

    assert_eq!(
        seen(get("www.example.test").await.unwrap()).await.server(),
        "jobs"
    );
    assert_eq!(
        seen(get("a.b.example.test:8443").await.unwrap())
            .await
            .server(),
        "site"
    );
    assert_eq!(
        seen(get("SHOP.Example.Test").await.unwrap()).await.server(),
        "site"
    );
    gateway_error(get("example.test").await.unwrap(), 404).await;
    gateway_error(get("evilexample.test").await.unwrap(), 404).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_outside_the_allowlist_gets_405_with_allow_and_never_reaches_the_app() {
    let (api, jobs, site) = three_upstreams().await;
    let gw = Gateway::start(&config(&api, &jobs, &site)).await;
    let c = gw.client();

    let r = c.get(gw.https_url("/api/jobs")).send().await.unwrap();
    assert_eq!(r.headers()["allow"], "POST");
    let body = gateway_error(r, 405).await;
    assert_eq!(body["error"], "method not allowed on this route");
    let r = c.delete(gw.http_url("/api/jobs/1")).send().await.unwrap();
    gateway_error(r, 405).await;
    assert_eq!(jobs.hits(), 0);

    // HEAD of a gateway-made response has the headers and no body.
    let r = c.head(gw.https_url("/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.headers().contains_key("x-request-id"));
    assert_eq!(r.bytes().await.unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_reach_the_upstream_unchanged_over_http1_and_http2() {
    let (api, jobs, site) = three_upstreams().await;
    let gw = Gateway::start(&config(&api, &jobs, &site)).await;
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let expected = crate::harness::hex(&<sha2::Sha256 as sha2::Digest>::digest(&body));

    let h2 = gw.client();
    let r = h2
        .post(gw.https_url("/api/jobs"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(seen(r).await.body_sha256(), expected);

    let h1 = gw.client_builder().http1_only().build().unwrap();
    let r = h1
        .post(gw.https_url("/api/jobs"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(seen(r).await.body_sha256(), expected);
}
