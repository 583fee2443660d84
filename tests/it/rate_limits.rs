//! Rate limits, lockouts and in-flight caps through the real binary, and one limit shared by
//! two gateways through a real Redis.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::harness::{gateway_error, seen, Gateway, RedisServer, Upstream, Workdir, TLS_BASICS};

fn config(app: &Upstream, policies: &str, routes: &str) -> String {
    format!(
        "{TLS_BASICS}\n{policies}\n[upstreams.app]\nservers = [\"{}\"]\n{routes}",
        app.addr
    )
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_limit_requests_pass_then_a_429_with_every_header() {
    let app = Upstream::start("app").await;
    let policies = "[rate_limits.per_ip]\nkey = \"client_ip\"\nlimit = 5\nper = \"1m\"\n\n[defaults]\nheaders = \"strict-api\"\nrate_limits = [\"per_ip\"]";
    let routes = "[[routes]]\nname = \"api\"\nupstream = \"app\"";
    let gw = Gateway::start(&config(&app, policies, routes)).await;
    let c = gw.client();
    for remaining in (0..5).rev() {
        let r = c.get(gw.https_url("/x")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "ratelimit-policy"), "\"per_ip\";q=5;w=60");
        let expected = format!("\"per_ip\";r={remaining};t=");
        assert!(
            header(&r, "ratelimit").starts_with(&expected),
            "{}",
            header(&r, "ratelimit")
        );
    }
    let r = c.get(gw.https_url("/x")).send().await.unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // One request every 12 s refills the bucket: Retry-After is 12, give or take the clock.
    let retry: u64 = header(&r, "retry-after").parse().unwrap();
    assert!((11..=12).contains(&retry), "Retry-After {retry}");
    assert_eq!(header(&r, "x-ratelimit-limit"), "5");
    assert_eq!(header(&r, "x-ratelimit-remaining"), "0");
    let reset: u64 = header(&r, "x-ratelimit-reset").parse().unwrap();
    assert!(
        reset.abs_diff(now + retry) <= 1,
        "reset {reset} vs now {now} + {retry}"
    );
    assert_eq!(header(&r, "ratelimit-policy"), "\"per_ip\";q=5;w=60");
    assert_eq!(header(&r, "ratelimit"), format!("\"per_ip\";r=0;t={retry}"));
    assert_eq!(
        header(&r, "x-frame-options"),
        "DENY",
        "security headers on the 429"
    );
    let id = header(&r, "x-request-id").to_string();
    let body = gateway_error(r, 429).await;
    assert_eq!(body["error"], "too many requests");
    assert_eq!(app.hits(), 5, "the refused request never reached the app");
    assert_eq!(gw.access_line(&id).await["decision"], "rate_limited:per_ip");

    let m = gw.metrics().await;
    assert!(
        m.contains("gateway_rate_limit_decisions_total{policy=\"per_ip\",result=\"allowed\"} 5"),
        "{m}"
    );
    assert!(
        m.contains("gateway_rate_limit_decisions_total{policy=\"per_ip\",result=\"limited\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("gateway_rate_limit_keys{policy=\"per_ip\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_smaller_than_the_limit_spreads_requests_out() {
    let app = Upstream::start("app").await;
    let policies = "[rate_limits.smooth]\nkey = \"global\"\nlimit = 60\nper = \"1m\"\nburst = 2";
    let routes = "[[routes]]\nname = \"api\"\nupstream = \"app\"\nrate_limits = [\"smooth\"]";
    let gw = Gateway::start(&config(&app, policies, routes)).await;
    let c = gw.client();
    for _ in 0..2 {
        let status = c.get(gw.https_url("/")).send().await.unwrap().status();
        // The key is global: a request from anywhere else would take a token; name it.
        assert_eq!(status, 200, "access log: {:?}", gw.access_log());
    }
    let r = c.get(gw.https_url("/")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "retry-after"), "1");
    assert_eq!(
        header(&r, "x-ratelimit-limit"),
        "2",
        "the burst is what a client can send at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_policy_on_two_routes_is_one_limit_unless_scoped_per_route() {
    let app = Upstream::start("app").await;
    let policies = "[rate_limits.shared]\nkey = \"client_ip\"\nlimit = 2\nper = \"1m\"\n\n[rate_limits.each]\nkey = \"client_ip\"\nlimit = 2\nper = \"1m\"\nscope = \"route\"";
    let routes = "[[routes]]\nname = \"a\"\npath = \"/a\"\nupstream = \"app\"\nrate_limits = [\"shared\"]\n[[routes]]\nname = \"b\"\npath = \"/b\"\nupstream = \"app\"\nrate_limits = [\"shared\"]\n[[routes]]\nname = \"c\"\npath = \"/c\"\nupstream = \"app\"\nrate_limits = [\"each\"]\n[[routes]]\nname = \"d\"\npath = \"/d\"\nupstream = \"app\"\nrate_limits = [\"each\"]";
    let gw = Gateway::start(&config(&app, policies, routes)).await;
    let c = gw.client();
    let status = |p: &'static str| {
        let c = c.clone();
        let url = gw.https_url(p);
        async move { c.get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        (status("/a").await, status("/b").await, status("/a").await),
        (200, 200, 429)
    );
    assert_eq!(status("/b").await, 429);
    assert_eq!(
        (status("/c").await, status("/c").await, status("/c").await),
        (200, 200, 429)
    );
    assert_eq!(
        (status("/d").await, status("/d").await),
        (200, 200),
        "scope = route: d has its own"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_by_one_policy_is_not_charged_to_the_others() {
    let app = Upstream::start("app").await;
    let policies = "[rate_limits.global]\nkey = \"global\"\nlimit = 3\nper = \"1m\"\n\n[rate_limits.per_user]\nkey = \"header:X-User\"\nlimit = 1\nper = \"1m\"";
    let routes =
        "[[routes]]\nname = \"api\"\nupstream = \"app\"\nrate_limits = [\"global\", \"per_user\"]";
    let gw = Gateway::start(&config(&app, policies, routes)).await;
    let c = gw.client();
    let user = |u: &'static str| {
        let c = c.clone();
        let url = gw.https_url("/");
        async move { c.get(url).header("x-user", u).send().await.unwrap() }
    };
    assert_eq!(user("alice").await.status(), 200);
    for _ in 0..5 {
        let r = user("alice").await;
        assert_eq!(r.status(), 429);
        assert_eq!(header(&r, "ratelimit-policy"), "\"per_user\";q=1;w=60");
    }
    // Alice's refusals cost the global limit nothing: two more users fit, the next does not.
    assert_eq!(user("bob").await.status(), 200);
    assert_eq!(user("carol").await.status(), 200);
    let r = user("dave").await;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "ratelimit-policy"), "\"global\";q=3;w=60");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compound_keys_and_a_missing_header_is_refused_not_unlimited() {
    let app = Upstream::start("app").await;
    let policies = "[rate_limits.tenant]\nkey = [\"client_ip\", \"header:X-Tenant\"]\nlimit = 1\nper = \"1m\"\n\n[rate_limits.loose]\nkey = \"header:X-Tenant\"\nlimit = 1\nper = \"1m\"\nmissing_key = \"shared\"";
    let routes = "[[routes]]\nname = \"strict\"\npath = \"/strict\"\nupstream = \"app\"\nrate_limits = [\"tenant\"]\n[[routes]]\nname = \"loose\"\npath = \"/loose\"\nupstream = \"app\"\nrate_limits = [\"loose\"]";
    let gw = Gateway::start(&config(&app, policies, routes)).await;
    let c = gw.client();
    let get = |path: &'static str, tenant: Option<&'static str>| {
        let mut req = c.get(gw.https_url(path));
        if let Some(t) = tenant {
            req = req.header("x-tenant", t);
        }
        async move { req.send().await.unwrap() }
    };
    assert_eq!(get("/strict", Some("a")).await.status(), 200);
    assert_eq!(get("/strict", Some("a")).await.status(), 429);
    assert_eq!(
        get("/strict", Some("b")).await.status(),
        200,
        "another tenant, another bucket"
    );
    let body = gateway_error(get("/strict", None).await, 400).await;
    assert!(
        body["error"].as_str().unwrap().contains("x-tenant"),
        "{body}"
    );
    assert_eq!(app.hits(), 2);
    // missing_key = "shared": every request without the header shares one bucket.
    assert_eq!(get("/loose", None).await.status(), 200);
    assert_eq!(get("/loose", None).await.status(), 429);
    assert_eq!(get("/loose", Some("x")).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_changes_the_key_only_through_a_trusted_proxy() {
    let app = Upstream::start("app").await;
    let policies = "[rate_limits.per_ip]\nkey = \"client_ip\"\nlimit = 1\nper = \"1m\"";
    let routes = "[[routes]]\nname = \"api\"\nupstream = \"app\"\nrate_limits = [\"per_ip\"]";
    let untrusted = Gateway::start(&config(&app, policies, routes)).await;
    let c = untrusted.client();
    let send = |gw: &Gateway, ip: &'static str| {
        c.get(gw.https_url("/"))
            .header("x-forwarded-for", ip)
            .send()
    };
    assert_eq!(
        send(&untrusted, "198.51.100.1").await.unwrap().status(),
        200
    );
    assert_eq!(
        send(&untrusted, "198.51.100.2").await.unwrap().status(),
        429,
        "a spoofed XFF is not a new client"
    );

    let trusted_config = config(&app, policies, routes).replace(
        "redirect_https = false",
        "redirect_https = false\ntrusted_proxies = [\"127.0.0.1/32\"]",
    );
    let trusted = Gateway::start(&trusted_config).await;
    let c = trusted.client();
    let send = |ip: &'static str| {
        c.get(trusted.https_url("/"))
            .header("x-forwarded-for", ip)
            .send()
    };
    assert_eq!(send("198.51.100.1").await.unwrap().status(), 200);
    assert_eq!(
        send("198.51.100.2").await.unwrap().status(),
        200,
        "behind a trusted proxy, clients are told apart"
    );
    assert_eq!(send("198.51.100.1").await.unwrap().status(), 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_lock_a_client_out_with_doubling_blocks() {
    let app = Upstream::start("app").await;
    let policies = "[lockouts.login]\nstatuses = [401]\nafter = 3\nwithin = \"1m\"\nblock = \"1s\"\nmax_block = \"10s\"";
    let routes = "[[routes]]\nname = \"login\"\npath = \"/login\"\nupstream = \"app\"\nlockout = \"login\"\n[[routes]]\nname = \"other\"\npath = \"/other\"\nupstream = \"app\"";
    let gw = Gateway::start(&config(&app, policies, routes)).await;
    let c = gw.client();
    let login = || c.get(gw.https_url("/login/status/401")).send();
    for _ in 0..3 {
        assert_eq!(login().await.unwrap().status(), 401);
    }
    let r = login().await.unwrap();
    assert_eq!(header(&r, "retry-after"), "1");
    let body = gateway_error(r, 429).await;
    assert_eq!(body["error"], "too many failed attempts; try again later");
    assert_eq!(app.hits(), 3, "a locked-out client never reaches the app");
    assert_eq!(
        c.get(gw.https_url("/other")).send().await.unwrap().status(),
        200,
        "other routes are not locked"
    );

    // After the block, three more failures block for twice as long.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..3 {
        assert_eq!(login().await.unwrap().status(), 401);
    }
    let r = login().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "retry-after"), "2");
    let m = gw.metrics().await;
    assert!(
        m.contains("gateway_lockouts_total{policy=\"login\"} 2"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_caps_answer_429_at_once_and_give_places_back() {
    let app = Upstream::start("app").await;
    let routes = "[[routes]]\nname = \"stream\"\nupstream = \"app\"\nmax_in_flight = 2";
    let gw = Gateway::start(&config(&app, "", routes)).await;
    let c = gw.client();
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let c = c.clone();
            let url = gw.https_url("/events/slow?ms=1500");
            tokio::spawn(async move { c.get(url).send().await.unwrap().status() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let started = Instant::now();
    let r = c.get(gw.https_url("/x")).send().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "refused at once, not queued"
    );
    assert_eq!(header(&r, "retry-after"), "1");
    gateway_error(r, 429).await;
    for s in slow {
        assert_eq!(s.await.unwrap(), 200);
    }
    assert_eq!(
        c.get(gw.https_url("/x")).send().await.unwrap().status(),
        200,
        "places came back"
    );
}

fn redis_config(app: &Upstream, redis_url: &str) -> String {
    let policies = format!(
        "[redis]\nurl = {{ env = \"PALISADE_TEST_REDIS\" }}\ntimeout = \"50ms\"\non_error = \"local\"\n\n[rate_limits.shared]\nkey = \"global\"\nlimit = 4\nper = \"1m\"\nstore = \"redis\"\n# {redis_url}"
    );
    config(
        app,
        &policies,
        "[[routes]]\nname = \"api\"\nupstream = \"app\"\nrate_limits = [\"shared\"]",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_redis_enforce_one_limit_and_survive_its_death() {
    let Some(mut redis) = RedisServer::start().await else {
        return;
    };
    let app = Upstream::start("app").await;
    let url = redis.url();
    let env = [("PALISADE_TEST_REDIS", url.as_str())];
    let text = redis_config(&app, &url);
    let start = |work: Workdir| Gateway::start_in(work, &text, &env);
    let with_cert = || {
        let w = Workdir::new();
        w.cert("main", &["localhost"]);
        w
    };
    let one = start(with_cert()).await;
    let two = start(with_cert()).await;
    let (c1, c2) = (one.client(), two.client());
    let mut statuses = Vec::new();
    for i in 0..6 {
        let (c, gw) = if i % 2 == 0 { (&c1, &one) } else { (&c2, &two) };
        statuses.push(
            c.get(gw.https_url("/"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(
        statuses,
        vec![200, 200, 200, 200, 429, 429],
        "one combined limit of 4"
    );

    // Redis dies: decisions fall back to each instance's own table, fast, and no 5xx.
    redis.kill();
    for _ in 0..6 {
        let started = Instant::now();
        let r = c1.get(one.https_url("/")).send().await.unwrap();
        assert!(r.status() == 200 || r.status() == 429, "{}", r.status());
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "took {:?}",
            started.elapsed()
        );
    }
    let m = one.metrics().await;
    let errors: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("gateway_rate_limit_store_errors_total{store=\"redis\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(errors >= 1, "{m}");
    seen(c2.get(two.https_url("/")).send().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_a_redis_cluster_share_limits_whichever_node_holds_the_key() {
    let dir = Workdir::new();
    let Some(nodes) = RedisServer::start_cluster(dir.path()).await else {
        return;
    };
    let app = Upstream::start("app").await;
    let urls: Vec<String> = nodes.iter().map(RedisServer::url).collect();
    let url = urls.join(",");
    let env = [("PALISADE_TEST_REDIS", url.as_str())];
    let text = redis_config(&app, &url)
        .replace(
            "key = \"global\"\nlimit = 4",
            "key = \"header:X-Tenant\"\nlimit = 1",
        )
        .replace("timeout = \"50ms\"", "timeout = \"500ms\"")
        .replace("on_error = \"local\"", "on_error = \"deny\"");
    let with_cert = || {
        let w = Workdir::new();
        w.cert("main", &["localhost"]);
        w
    };
    let one = Gateway::start_in(with_cert(), &text, &env).await;
    let two = Gateway::start_in(with_cert(), &text, &env).await;
    let (c1, c2) = (one.client(), two.client());
    // Twelve tenants spread over the three nodes' slots: each gets one request in all.
    for tenant in 0..12 {
        let t = format!("tenant-{tenant}");
        let r = c1
            .get(one.https_url("/"))
            .header("x-tenant", &t)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{t} on the first gateway");
        let r = c2
            .get(two.https_url("/"))
            .header("x-tenant", &t)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            429,
            "{t} on the second gateway: the cluster holds one limit"
        );
    }
    let m = one.metrics().await;
    assert!(
        !m.contains("gateway_rate_limit_store_errors_total{store=\"redis\"} "),
        "{m}"
    );
}

#[test]
fn rate_limit_mistakes_are_config_errors() {
    let work = Workdir::new();
    let text = r#"
[upstreams.app]
servers = ["127.0.0.1:9"]

[rate_limits.a]
key = "client_ip"
limit = 0
per = "1m"

[rate_limits.b]
key = "header:"
limit = 5
per = "1m"
store = "redis"

[[routes]]
name = "r"
upstream = "app"
rate_limits = ["a", "nope"]
lockout = "missing"
"#;
    let path = work.write("gateway.toml", text);
    let (code, _, err) = crate::harness::check(&path);
    assert_eq!(code, 78);
    let err = err.replace(&path.display().to_string(), "gateway.toml");
    assert!(
        err.contains("gateway.toml:7:1: rate_limits.a.limit: must be at least 1"),
        "{err}"
    );
    assert!(
        err.contains("gateway.toml:11:1: rate_limits.b.key: `header:` is not a key"),
        "{err}"
    );
    assert!(
        err.contains("gateway.toml:14:1: rate_limits.b.store: `redis` needs a [redis] section"),
        "{err}"
    );
    assert!(
        err.contains("routes[0].rate_limits[1]: unknown rate limit `nope`"),
        "{err}"
    );
    assert!(
        err.contains("routes[0].lockout: unknown lockout `missing`"),
        "{err}"
    );
}
