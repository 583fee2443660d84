//! Hot reload on SIGHUP through the real binary.

use std::time::Duration;

use crate::harness::{seen, Gateway, Upstream, TLS_BASICS};

fn config(a: &Upstream, b: &Upstream, target: &str, extra: &str) -> String {
    format!(
        "{TLS_BASICS}\n[rate_limits.per_ip]\nkey = \"client_ip\"\nlimit = 2\nper = \"1m\"\n\n[upstreams.a]\nservers = [\"{}\"]\n[upstreams.b]\nservers = [\"{}\"]\n\n[[routes]]\nname = \"main\"\nupstream = \"{target}\"\n{extra}",
        a.addr, b.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_config_and_in_flight_requests_finish_on_the_old_one() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let gw = Gateway::start(&config(&a, &b, "a", "")).await;
    let c = gw.client();
    assert_eq!(
        seen(c.get(gw.https_url("/")).send().await.unwrap())
            .await
            .server(),
        "a"
    );

    let in_flight = tokio::spawn({
        let (c, url) = (c.clone(), gw.https_url("/slow?ms=1200"));
        async move { c.get(url).send().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(gw.reload(&config(&a, &b, "b", "")).await, "success");
    assert_eq!(
        seen(c.get(gw.https_url("/")).send().await.unwrap())
            .await
            .server(),
        "b"
    );
    let old = seen(in_flight.await.unwrap()).await;
    assert_eq!(
        old.server(),
        "a",
        "the request in flight finished where it started"
    );

    // The routes and pools of both configs keep their series with them; they count into the
    // same series, the request that finished on the old config included.
    let want = [
        "gateway_requests_total{method=\"GET\",route=\"main\",status_class=\"2xx\"} 3",
        "gateway_request_duration_seconds_count{route=\"main\"} 3",
        "gateway_upstream_duration_seconds_count{upstream=\"a\"} 2",
        "gateway_upstream_duration_seconds_count{upstream=\"b\"} 1",
    ];
    let mut metrics = gw.metrics().await;
    for _ in 0..50 {
        if want.iter().all(|w| metrics.contains(w)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        metrics = gw.metrics().await;
    }
    for w in want {
        assert!(metrics.contains(w), "{w}\n{metrics}");
    }
    assert!(
        metrics.contains("gateway_config_last_reload_success_timestamp_seconds"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_is_refused_whole_and_the_old_one_keeps_serving() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let gw = Gateway::start(&config(&a, &b, "a", "")).await;
    let broken = config(&a, &b, "nowhere", "color = \"blue\"");
    assert_eq!(gw.reload(&broken).await, "error");
    let err = gw.stderr();
    assert!(
        err.contains("gateway.toml:28:1: routes[0].color: unknown field `color`"),
        "{err}"
    );
    assert_eq!(
        seen(gw.client().get(gw.https_url("/")).send().await.unwrap())
            .await
            .server(),
        "a"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_change_needs_an_upgrade_and_is_not_half_applied() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let gw = Gateway::start(&config(&a, &b, "a", "")).await;
    // Each reload also moves the route to `b`: none of it may be applied.
    let moved = config(&a, &b, "b", "").replace("127.0.0.1:{HTTP}", "127.0.0.1:1");
    refused_as_needing_a_restart(&gw, &moved, "[server] listen or tls_listen").await;
    // The upstream pool is sized once, at start.
    let pool = config(&a, &b, "b", "").replace(
        "redirect_https = false",
        "redirect_https = false\nupstream_keepalive = 16",
    );
    refused_as_needing_a_restart(&gw, &pool, "[server] upstream_keepalive").await;
}

/// A reload of `cfg` is refused, naming `what` as needing a restart, and the running config
/// (its route to upstream `a`) keeps serving unchanged.
async fn refused_as_needing_a_restart(gw: &Gateway, cfg: &str, what: &str) {
    assert_eq!(gw.reload(cfg).await, "error");
    assert!(
        gw.stderr().contains(&format!(
            "{what} changed, which needs a restart or an upgrade"
        )),
        "{}",
        gw.stderr()
    );
    assert_eq!(
        seen(gw.client().get(gw.https_url("/")).send().await.unwrap())
            .await
            .server(),
        "a",
        "the route change was not applied either"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_buckets_survive_a_reload_that_keeps_the_policy() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let limited = "rate_limits = [\"per_ip\"]";
    let gw = Gateway::start(&config(&a, &b, "a", limited)).await;
    let c = gw.client();
    assert_eq!(c.get(gw.https_url("/")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(gw.https_url("/")).send().await.unwrap().status(), 200);
    assert_eq!(gw.reload(&config(&a, &b, "b", limited)).await, "success");
    assert_eq!(
        c.get(gw.https_url("/")).send().await.unwrap().status(),
        429,
        "the bucket was kept"
    );
    // A changed policy starts fresh.
    let bigger = config(&a, &b, "b", limited).replace("limit = 2", "limit = 3");
    assert_eq!(gw.reload(&bigger).await, "success");
    assert_eq!(c.get(gw.https_url("/")).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_read_again_on_reload() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let gw = Gateway::start(&config(&a, &b, "a", "")).await;
    let old_pem = gw.cert_pem("main");
    // A new certificate and key at the same paths.
    gw.work.cert("main", &["localhost"]);
    assert_eq!(gw.reload(&config(&a, &b, "a", "")).await, "success");
    let trusting = |pem: &[u8]| {
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(pem).unwrap())
            .build()
            .unwrap()
    };
    let r = trusting(&gw.cert_pem("main"))
        .get(gw.https_url("/"))
        .send()
        .await;
    assert_eq!(r.expect("the new certificate is served").status(), 200);
    assert!(
        trusting(&old_pem)
            .get(gw.https_url("/"))
            .send()
            .await
            .is_err(),
        "the old one is not"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn palisade_reload_signals_the_process_in_the_pid_file() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let gw = Gateway::start(&config(&a, &b, "a", "")).await;
    let pid_file = gw.work.path().join("palisade.pid");
    let written = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(written.trim(), gw.pid().to_string());
    gw.work
        .write("gateway.toml", &gw.ports.fill(&config(&a, &b, "b", "")));
    let out = std::process::Command::new(crate::harness::BIN)
        .args(["reload", "--pid-file"])
        .arg(&pid_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = gw.client();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while seen(c.get(gw.https_url("/")).send().await.unwrap())
        .await
        .server()
        != "b"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the reload did not happen"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reload_does_not_reset_the_buckets_of_the_running_config() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let limited = "rate_limits = [\"per_ip\"]";
    let running = config(&a, &b, "a", limited);
    let gw = Gateway::start(&running).await;
    let c = gw.client();
    assert_eq!(c.get(gw.https_url("/")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(gw.https_url("/")).send().await.unwrap().status(), 200);
    // A new limit together with a listener change: refused whole.
    let refused = running
        .replace("limit = 2", "limit = 3")
        .replace("127.0.0.1:{HTTP}", "127.0.0.1:1");
    assert_eq!(gw.reload(&refused).await, "error");
    // The running config again: its bucket is the one that was running all along.
    assert_eq!(gw.reload(&running).await, "success");
    assert_eq!(c.get(gw.https_url("/")).send().await.unwrap().status(), 429);
}

/// Reloads under steady load: a broken config is refused, two good ones are applied, and not
/// one request fails across all three (clients on HTTP/1.1 and HTTP/2 keep-alive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_steady_load_fail_no_request() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let gw = Gateway::start(&config(&a, &b, "a", "")).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let servers = Arc::new(Mutex::new(std::collections::BTreeSet::<String>::new()));
    let mut clients = Vec::new();
    for i in 0..4 {
        let client = if i % 2 == 0 {
            gw.client()
        } else {
            gw.client_builder().http1_only().build().unwrap()
        };
        let url = gw.https_url("/");
        let (stop, ok, failures, servers) =
            (stop.clone(), ok.clone(), failures.clone(), servers.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        let body: serde_json::Value = r.json().await.unwrap_or_default();
                        if let Some(s) = body["server"].as_str() {
                            servers.lock().unwrap().insert(s.to_string());
                        }
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("status {}", r.status())),
                    Err(e) => failures.lock().unwrap().push(e.to_string()),
                }
            }
        }));
    }
    let served = |n: usize| {
        let ok = ok.clone();
        async move {
            let target = ok.load(Ordering::Relaxed) + n;
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while ok.load(Ordering::Relaxed) < target && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    served(30).await;
    let broken = config(&a, &b, "nowhere", "");
    assert_eq!(gw.reload(&broken).await, "error");
    served(30).await;
    assert_eq!(gw.reload(&config(&a, &b, "b", "")).await, "success");
    served(30).await;
    assert_eq!(gw.reload(&config(&a, &b, "a", "")).await, "success");
    served(30).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(ok.load(Ordering::Relaxed) >= 120);
    let servers = servers.lock().unwrap();
    assert!(
        servers.contains("a") && servers.contains("b"),
        "{servers:?}"
    );
}
