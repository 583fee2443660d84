//! Upstream pools: failures answered with the gateway's JSON, round robin, retries, passive and
//! active health, timeouts, and TLS to the upstream.

use std::time::{Duration, Instant};

use crate::harness::{gateway_error, seen, Gateway, Upstream, Workdir, DEAD, TLS_BASICS};

fn pool_config(servers: &[String], extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "{TLS_BASICS}\n[upstreams.app]\nservers = [{}]\n{extra}\n\n[[routes]]\nname = \"all\"\nupstream = \"app\"\n",
        list.join(", ")
    )
}

fn dead_addr() -> String {
    DEAD.to_string()
}

async fn wait_for(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_a_json_502_without_internals_and_readyz_says_which_pool() {
    let dead = dead_addr();
    let extra = "retries = 0\nhealth_check = { path = \"/health\", interval = \"100ms\", timeout = \"200ms\", unhealthy_after = 1, healthy_after = 1 }";
    let config = pool_config(std::slice::from_ref(&dead), extra);
    let gw = Gateway::start(&config).await;
    let c = gw.client();

    // Before the first check has failed the connect fails (502); after it, no server is
    // available (503). Either way, the gateway's JSON.
    let r = c.get(gw.https_url("/x?token=s3cret")).send().await.unwrap();
    let status = r.status().as_u16();
    let text = format!("{:?}", r.headers());
    let body = gateway_error(r, status).await;
    assert!(status == 502 || status == 503, "{status}");
    assert!(
        !body.to_string().contains(DEAD) && !text.contains(DEAD),
        "the upstream address leaked: {body}"
    );
    assert!(
        !body.to_string().to_lowercase().contains("refused"),
        "error text leaked: {body}"
    );

    let admin = reqwest::Client::new();
    wait_for("/readyz to report the pool down", async || {
        let r = admin.get(gw.admin_url("/readyz")).send().await.unwrap();
        r.status() == 503
    })
    .await;
    let r = admin.get(gw.admin_url("/readyz")).send().await.unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["upstreams_down"], serde_json::json!(["app"]));
    assert!(!body.to_string().contains(DEAD));

    assert!(
        !gw.stderr().contains("s3cret"),
        "a query string reached the error log:\n{}",
        gw.stderr()
    );
    // With every server down the gateway answers 503 at once.
    gateway_error(c.get(gw.https_url("/x")).send().await.unwrap(), 503).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_take_turns() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let gw = Gateway::start(&pool_config(&[a.addr.to_string(), b.addr.to_string()], "")).await;
    let c = gw.client();
    let mut order = Vec::new();
    for _ in 0..6 {
        order.push(
            seen(c.get(gw.https_url("/")).send().await.unwrap())
                .await
                .server()
                .to_string(),
        );
    }
    assert_eq!(a.hits(), 3);
    assert_eq!(b.hits(), 3);
    assert!(
        order.windows(2).all(|w| w[0] != w[1]),
        "not round robin: {order:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_requests_are_retried_on_another_server_and_posts_are_not() {
    let live = Upstream::start("live").await;
    // A high failure threshold keeps the dead server in rotation for this test.
    let extra = "retries = 1\npassive_health = { failures = 1000, rest = \"10s\" }";
    let gw = Gateway::start(&pool_config(&[dead_addr(), live.addr.to_string()], extra)).await;
    let c = gw.client();
    for _ in 0..4 {
        assert_eq!(
            seen(c.get(gw.https_url("/g")).send().await.unwrap())
                .await
                .server(),
            "live"
        );
    }
    let mut failed = 0;
    for _ in 0..4 {
        let r = c
            .post(gw.https_url("/p"))
            .body("charge the card")
            .send()
            .await
            .unwrap();
        if r.status() == 502 {
            gateway_error(r, 502).await;
            failed += 1;
        } else {
            assert_eq!(r.status(), 200);
        }
    }
    assert_eq!(
        failed, 2,
        "a POST that met the dead server must fail, not be sent elsewhere"
    );
    assert_eq!(live.hits(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_keeps_failing_to_connect_rests() {
    let live = Upstream::start("live").await;
    let extra = "retries = 0\npassive_health = { failures = 2, rest = \"1m\" }";
    let gw = Gateway::start(&pool_config(&[dead_addr(), live.addr.to_string()], extra)).await;
    let c = gw.client();
    let mut failures = 0;
    for _ in 0..4 {
        if c.get(gw.https_url("/")).send().await.unwrap().status() == 502 {
            failures += 1;
        }
    }
    assert_eq!(failures, 2, "the dead server fails twice, then rests");
    for _ in 0..6 {
        assert_eq!(c.get(gw.https_url("/")).send().await.unwrap().status(), 200);
    }
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(&format!(
            "gateway_upstream_health{{server=\"{}\",upstream=\"app\"}} 1",
            live.addr
        )),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("gateway_upstream_errors_total{kind=\"connect_refused\",upstream=\"app\"} 2"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_checks_take_a_failing_server_out_and_bring_it_back() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let extra = "health_check = { path = \"/health\", interval = \"100ms\", unhealthy_after = 2, healthy_after = 2 }";
    let gw = Gateway::start(&pool_config(
        &[a.addr.to_string(), b.addr.to_string()],
        extra,
    ))
    .await;
    let c = gw.client();
    b.set_healthy(false);
    let metrics_say = async |healthy: u8| {
        let line = format!(
            "gateway_upstream_health{{server=\"{}\",upstream=\"app\"}} {healthy}",
            b.addr
        );
        gw.metrics().await.contains(&line)
    };
    wait_for("b to be marked down", async || metrics_say(0).await).await;
    let before = b.hits();
    for _ in 0..4 {
        assert_eq!(
            seen(c.get(gw.https_url("/")).send().await.unwrap())
                .await
                .server(),
            "a"
        );
    }
    assert_eq!(b.hits(), before);
    b.set_healthy(true);
    wait_for("b to come back", async || metrics_say(1).await).await;
    let mut servers = Vec::new();
    for _ in 0..4 {
        servers.push(
            seen(c.get(gw.https_url("/")).send().await.unwrap())
                .await
                .server()
                .to_string(),
        );
    }
    assert!(servers.iter().any(|s| s == "b"), "{servers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_slower_than_read_timeout_is_a_504() {
    let slow = Upstream::start("slow").await;
    let gw = Gateway::start(&pool_config(
        &[slow.addr.to_string()],
        "read_timeout = \"300ms\"\nretries = 0",
    ))
    .await;
    let c = gw.client();
    let started = Instant::now();
    let body = gateway_error(
        c.get(gw.https_url("/slow?ms=3000")).send().await.unwrap(),
        504,
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(body["error"], "the upstream did not answer in time");
    assert_eq!(
        seen(c.get(gw.https_url("/slow?ms=10")).send().await.unwrap())
            .await
            .server(),
        "slow"
    );
}

/// Upstream read timeouts of different lengths on one thread: a short one that starts while a
/// long one waits still fires on time, and the long one is not cut short by it. (A timer list
/// per thread that slept until its earliest deadline without re-arming for a shorter one
/// failed this: the 300 ms timeout answered after the 5 s one's deadline.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_read_timeout_fires_on_time_beside_a_long_one_on_the_same_thread() {
    let slow = Upstream::start("slow").await;
    let config = format!(
        "{}\n[upstreams.patient]\nservers = [\"{addr}\"]\nread_timeout = \"5s\"\nretries = 0\n\n\
         [upstreams.hasty]\nservers = [\"{addr}\"]\nread_timeout = \"300ms\"\nretries = 0\n\n\
         [[routes]]\nname = \"patient\"\npath = \"/patient\"\nupstream = \"patient\"\n\n\
         [[routes]]\nname = \"hasty\"\nupstream = \"hasty\"\n",
        TLS_BASICS.replace("[server]\n", "[server]\nthreads = 1\n"),
        addr = slow.addr,
    );
    let gw = Gateway::start(&config).await;
    let c = gw.client();
    let patient = tokio::spawn({
        let (c, url) = (c.clone(), gw.https_url("/patient/slow?ms=2500"));
        async move { c.get(url).send().await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let body = gateway_error(
        c.get(gw.https_url("/slow?ms=3000")).send().await.unwrap(),
        504,
    )
    .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "the 300 ms timeout took {took:?}"
    );
    assert_eq!(body["error"], "the upstream did not answer in time");
    let answered = patient.await.unwrap();
    assert_eq!(answered.status(), 200, "the 5 s timeout fired early");
}

/// An upstream that takes its time between the pieces of an answer: the head 250 ms after the
/// request's, then a 10-byte body two bytes at a time, 250 ms apart (`/drip`), or two bytes and
/// then nothing for 4 s before the rest (`/stall`).
async fn start_dripping_upstream() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let stall = head.windows(6).any(|w| w == b"/stall");
                let pause = Duration::from_millis(250);
                tokio::time::sleep(pause).await;
                let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\n";
                if s.write_all(answer).await.is_err() {
                    return;
                }
                for (i, piece) in b"0123456789".chunks(2).enumerate() {
                    tokio::time::sleep(if stall && i == 1 {
                        Duration::from_secs(4)
                    } else {
                        pause
                    })
                    .await;
                    if s.write_all(piece).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// `read_timeout` bounds each wait for the upstream, not its whole answer: an answer that
/// comes in pieces, every one well within the limit, arrives whole however long it takes in
/// all; a body that stops for longer than the limit is cut about the limit after its last
/// piece. (The session's one timer is moved to a new deadline at each wait, pingora-core
/// patch 20: a timer left at its first deadline cut the first answer, one never set kept the
/// second waiting for the whole stall.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_timeout_bounds_each_wait_for_the_upstream_not_the_whole_answer() {
    let upstream = start_dripping_upstream().await;
    let gw = Gateway::start(&pool_config(
        &[upstream.to_string()],
        "read_timeout = \"800ms\"\nretries = 0",
    ))
    .await;
    let c = gw.client();

    let started = Instant::now();
    let answer = c.get(gw.https_url("/drip")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(&answer.bytes().await.unwrap()[..], b"0123456789");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1500), "{took:?}");

    let started = Instant::now();
    let answer = c.get(gw.https_url("/stall")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let body = answer.bytes().await;
    let took = started.elapsed();
    assert!(body.is_err(), "a body cut short arrived as {body:?}");
    assert!(took < Duration::from_secs(3), "cut after {took:?}");
}

/// TLS to the upstream, with SNI and a CA file: the upstream is a second Palisade over HTTPS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_upstream_verifies_it_with_the_ca_file_and_sni() {
    let app = Upstream::start("app").await;
    let inner = Gateway::start(&pool_config(&[app.addr.to_string()], "")).await;
    let inner_cert = inner.work.path().join("certs/main/dev.pem");

    let work = Workdir::new();
    work.cert("main", &["localhost"]);
    std::fs::copy(&inner_cert, work.path().join("inner-ca.pem")).unwrap();
    let upstream = format!("localhost:{}", inner.ports.https);
    let extra = "tls = true\nsni = \"localhost\"\nca_file = \"inner-ca.pem\"";
    let outer = Gateway::start_in(work, &pool_config(&[upstream], extra), &[]).await;
    let s = seen(
        outer
            .client()
            .get(outer.https_url("/through"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s.server(), s.path()), ("app", "/through"));
    // The inner gateway saw the outer one as its client, over HTTPS.
    assert_eq!(s.header("x-forwarded-proto").as_deref(), Some("https"));

    // Without the CA the upstream's certificate is not trusted: a 502, not a silent downgrade.
    let work = Workdir::new();
    work.cert("main", &["localhost"]);
    let upstream = format!("localhost:{}", inner.ports.https);
    let untrusted = Gateway::start_in(
        work,
        &pool_config(&[upstream], "tls = true\nretries = 0"),
        &[],
    )
    .await;
    gateway_error(
        untrusted
            .client()
            .get(untrusted.https_url("/"))
            .send()
            .await
            .unwrap(),
        502,
    )
    .await;
}
