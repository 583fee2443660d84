//! The admin listener, the metrics it serves, and shutdown.

use std::time::{Duration, Instant};

use crate::harness::{seen, Gateway, Upstream, TLS_BASICS};

fn config(upstream: &Upstream) -> String {
    format!(
        "{TLS_BASICS}\n[upstreams.app]\nservers = [\"{}\"]\n\n[[routes]]\nname = \"users\"\npath = \"/users\"\nupstream = \"app\"\n",
        upstream.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_version_and_readyz_say_little_and_mean_it() {
    let upstream = Upstream::start("app").await;
    let gw = Gateway::start(&config(&upstream)).await;
    let get = |path: &str| reqwest::get(gw.admin_url(path));

    let r = get("/healthz").await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["uptime_seconds"].is_u64());
    assert_eq!(
        body.as_object().unwrap().len(),
        3,
        "healthz is minimal: {body}"
    );

    let v: serde_json::Value = get("/version").await.unwrap().json().await.unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["git_sha"].is_string() && v["build_id"].is_string());

    let r = get("/readyz").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get("/nope").await.unwrap().status(), 404);

    // The admin routes are not on the gateway's own listeners.
    let r = gw
        .client()
        .get(gw.https_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_use_route_names_never_raw_paths_and_pass_promtool() {
    let upstream = Upstream::start("app").await;
    let gw = Gateway::start(&config(&upstream)).await;
    let c = gw.client();
    for i in 0..3 {
        seen(
            c.get(gw.https_url(&format!("/users/{i}")))
                .send()
                .await
                .unwrap(),
        )
        .await;
    }
    assert_eq!(
        c.get(gw.https_url("/unrouted/abc"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        c.request(
            reqwest::Method::from_bytes(b"PURGE").unwrap(),
            gw.https_url("/users")
        )
        .send()
        .await
        .unwrap()
        .status(),
        200
    );

    let text = gw.metrics().await;
    assert!(
        text.contains(
            "gateway_requests_total{method=\"GET\",route=\"users\",status_class=\"2xx\"} 3"
        ),
        "{text}"
    );
    assert!(
        text.contains("gateway_requests_total{method=\"GET\",route=\"-\",status_class=\"4xx\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "gateway_requests_total{method=\"OTHER\",route=\"users\",status_class=\"2xx\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("gateway_request_duration_seconds_count{route=\"users\"} 4"),
        "{text}"
    );
    assert!(
        text.contains("gateway_upstream_duration_seconds_count{upstream=\"app\"} 4"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "gateway_upstream_health{{server=\"{}\",upstream=\"app\"}} 1",
            upstream.addr
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(text.contains("gateway_build_info{git_sha=\""), "{text}");
    assert!(text.contains("gateway_active_connections"), "{text}");
    assert!(
        !text.contains("/users/"),
        "a raw path became a label: {text}"
    );
    assert!(
        !text.contains("/unrouted"),
        "a raw path became a label: {text}"
    );

    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (installed by `make deps`)");
    std::io::Write::write_all(promtool.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_connections_count_open_client_connections() {
    let upstream = Upstream::start("app").await;
    let gw = Gateway::start(&config(&upstream)).await;
    let gauge = || async {
        let text = gw.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix("gateway_active_connections "))
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(-1)
    };
    assert_eq!(gauge().await, 0);
    // A slow request keeps one connection busy; a second keep-alive client holds another.
    let c = gw.client();
    let slow = tokio::spawn({
        let c = c.clone();
        let url = gw.https_url("/users/slow?ms=3000");
        async move { c.get(url).send().await.map(|r| r.status()) }
    });
    let idle = gw.client_builder().http1_only().build().unwrap();
    assert_eq!(
        idle.get(gw.https_url("/users"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Under a loaded machine the slow request's connection may take a moment to be accepted:
    // wait for it, but only while that request is still in flight (it holds its connection).
    let mut seen = gauge().await;
    while seen != 2 && !slow.is_finished() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen = gauge().await;
    }
    assert_eq!(seen, 2, "two client connections were open");
    assert_eq!(slow.await.unwrap().unwrap(), 200);
    drop(idle);
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(5);
    while gauge().await != 0 {
        assert!(Instant::now() < deadline, "connections were not released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_request_in_flight_finish_then_exits() {
    let upstream = Upstream::start("app").await;
    let mut gw = Gateway::start(&config(&upstream)).await;
    let c = gw.client();
    let in_flight = tokio::spawn({
        let url = gw.https_url("/users/slow?ms=1500");
        async move { c.get(url).send().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    gw.signal("TERM");

    let r = in_flight
        .await
        .unwrap()
        .expect("the in-flight request must complete");
    assert_eq!(r.status(), 200);
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exited after draining");
    assert!(status.success(), "{status}");
    assert!(
        sent.elapsed() < Duration::from_secs(8),
        "exit waited out the grace period instead of the drain"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", gw.ports.https)).is_err(),
        "still accepting after shutdown"
    );
}
