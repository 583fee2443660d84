//! API keys and webhook signatures through the real binary: every refusal, both key sets,
//! digests, expiry, roles, credentials never forwarded nor logged, forged identities dropped,
//! per-key limits, rotation by SIGHUP under load, and Stripe / HMAC signatures.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::harness::{gateway_error, hex, seen, Gateway, Upstream, Workdir, BIN, TLS_BASICS};

const OLD: &str = "pk_test_old_0123456789abcdefghij";
const NEW: &str = "pk_test_new_0123456789abcdefghij";
const OPS: &str = "pk_test_ops_0123456789abcdefghij";
const GONE: &str = "pk_test_gone_0123456789abcdefgh";
const STRIPE_SECRET: &str = "whsec_test_0123456789abcdefghij";
const HUB_SECRET: &str = "hub_secret_0123456789abcdefghij";

fn digest(key: &str) -> String {
    format!("sha256:{}", hex(&Sha256::digest(key.as_bytes())))
}

/// HMAC-SHA256 written out from its definition (RFC 2104), independent of the gateway's.
fn hmac_sha256(key: &[u8], message: &[u8]) -> String {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    hex(&Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn config(app: &Upstream, keys_source: &str) -> String {
    format!(
        r#"{TLS_BASICS}
[defaults]
headers = "strict-api"

[api_keys.clients]
header = "X-API-Key"
{keys_source}
[[api_keys.clients.keys]]
id = "ops-team"
hash = "{ops}"
roles = ["admin"]
[[api_keys.clients.keys]]
id = "retired"
hash = "{gone}"
expires = "2021-01-01T00:00:00Z"

[api_keys.tokens]
bearer = true
current = {{ env = "TEST_TOKENS" }}

[api_keys.legacy]
query = "api_key"
current = {{ env = "TEST_TOKENS" }}

[rate_limits.per_key]
key = "api_key"
limit = 2
per = "1m"

[lockouts.auth]
after = 4
within = "1m"
block = "1m"

[upstreams.app]
servers = ["{app}"]

[[routes]]
name = "admin"
path = "/admin"
upstream = "app"
auth = {{ api_keys = "clients", roles = ["admin"] }}

[[routes]]
name = "api"
path = "/api"
upstream = "app"
auth = {{ api_keys = "clients" }}
lockout = "auth"

[[routes]]
name = "metered"
path = "/metered"
upstream = "app"
auth = {{ api_keys = "clients" }}
rate_limits = ["per_key"]

[[routes]]
name = "bearer"
path = "/bearer"
upstream = "app"
auth = {{ api_keys = "tokens" }}

[[routes]]
name = "legacy"
path = "/legacy-api"
upstream = "app"
auth = {{ api_keys = "legacy" }}

[[routes]]
name = "open"
path = "/"
upstream = "app"
"#,
        ops = digest(OPS),
        gone = digest(GONE),
        app = app.addr,
    )
}

async fn start(app: &Upstream, keys_source: &str) -> Gateway {
    let work = Workdir::new();
    work.cert("main", &["localhost", "127.0.0.1"]);
    Gateway::start_in(work, &config(app, keys_source), &[("TEST_TOKENS", NEW)]).await
}

/// Neither stdout (access log, audit events) nor stderr holds any of `secrets`.
fn assert_no_secrets(gw: &Gateway, secrets: &[&str]) {
    let out = std::fs::read_to_string(gw.work.path().join("stdout.log")).unwrap_or_default();
    let err = gw.stderr();
    for secret in secrets {
        assert!(!out.contains(secret), "a secret in stdout:\n{out}");
        assert!(!err.contains(secret), "a secret in stderr:\n{err}");
    }
}

fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_wrong_expired_and_underprivileged_keys_are_refused() {
    let app = Upstream::start("app").await;
    let gw = start(
        &app,
        &format!("current = \"{OLD}\"\nnext = \"{}\"\n", digest(NEW)),
    )
    .await;
    let c = gw.client();
    let url = gw.https_url("/api/jobs");

    let r = c.get(&url).send().await.unwrap();
    assert_eq!(
        r.headers()["www-authenticate"],
        "ApiKey realm=\"clients\", header=\"x-api-key\""
    );
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let body = gateway_error(r, 401).await;
    assert_eq!(body["error"], "an API key is required");

    let r = c
        .get(&url)
        .header("x-api-key", "pk_test_wrong_0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(
        gateway_error(r, 401).await["error"],
        "the API key is not valid"
    );
    let r = c.get(&url).header("x-api-key", GONE).send().await.unwrap();
    assert_eq!(
        gateway_error(r, 401).await["error"],
        "the API key has expired"
    );
    let r = c
        .get(gw.https_url("/admin"))
        .header("x-api-key", OLD)
        .send()
        .await
        .unwrap();
    assert!(gateway_error(r, 403).await["error"]
        .as_str()
        .unwrap()
        .contains("role"));
    assert_eq!(app.hits(), 0, "no refused request reached the app");

    // Both sets are accepted; a digest stands for its key; the admin key has its role.
    for (key, set, path) in [
        (OLD, "current", "/api"),
        (NEW, "next", "/api"),
        (OPS, "named", "/admin"),
    ] {
        let s = seen(
            c.get(gw.https_url(path))
                .header("x-api-key", key)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(s.header("x-palisade-key-set").as_deref(), Some(set));
        assert!(s.header("x-api-key").is_none(), "the key was forwarded");
    }
    let s = seen(
        c.get(gw.https_url("/admin"))
            .header("x-api-key", OPS)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s.header("x-palisade-key-id").as_deref(), Some("ops-team"));
    assert_eq!(s.header("x-palisade-key-roles").as_deref(), Some("admin"));

    let m = gw.metrics().await;
    for (labels, at_least) in [
        ("policy=\"clients\",result=\"missing\",set=\"none\"", 1),
        ("policy=\"clients\",result=\"invalid\",set=\"none\"", 1),
        ("policy=\"clients\",result=\"expired\",set=\"named\"", 1),
        ("policy=\"clients\",result=\"forbidden\",set=\"current\"", 1),
        ("policy=\"clients\",result=\"ok\",set=\"current\"", 1),
        ("policy=\"clients\",result=\"ok\",set=\"next\"", 1),
        ("policy=\"clients\",result=\"ok\",set=\"named\"", 2),
    ] {
        let n = metric(&m, &format!("gateway_api_key_auth_total{{{labels}}} "));
        assert!(n >= at_least, "{labels}: {n}\n{m}");
    }
    assert!(
        m.contains("gateway_requests_rejected_total{reason=\"unauthorized\",route=\"api\"} 3"),
        "{m}"
    );

    // One audit line per check: the key's id or `unknown`, never the key.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let events: Vec<_> = gw
        .access_log()
        .into_iter()
        .filter(|l| l["event"] == "auth")
        .collect();
    let failures: Vec<_> = events.iter().filter(|e| e["level"] == "warn").collect();
    assert_eq!(failures.len(), 4, "{events:?}");
    assert!(
        failures.iter().any(|e| e["result"] == "invalid"
            && e["key_id"] == "unknown"
            && e["client_ip"] == "127.0.0.1"
            && e["route"] == "api"),
        "{failures:?}"
    );
    assert!(
        failures
            .iter()
            .any(|e| e["result"] == "expired" && e["key_id"] == "retired"),
        "{failures:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["level"] == "info" && e["key_id"] == "ops-team"),
        "{events:?}"
    );
    assert_no_secrets(&gw, &[OLD, NEW, OPS, GONE, "pk_test_wrong"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_keys_gets_a_client_locked_out() {
    let app = Upstream::start("app").await;
    let gw = start(&app, &format!("current = \"{OLD}\"\n")).await;
    let c = gw.client();
    for i in 0..4 {
        let r = c
            .get(gw.https_url("/api"))
            .header("x-api-key", format!("guess-{i:0>20}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    // Now even the right key waits out the block.
    let r = c
        .get(gw.https_url("/api"))
        .header("x-api-key", OLD)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(app.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identity_headers_never_reach_the_app() {
    let app = Upstream::start("app").await;
    let gw = start(&app, &format!("current = \"{OLD}\"\n")).await;
    let c = gw.client();
    let forged = |rb: reqwest::RequestBuilder| {
        rb.header("x-palisade-key-id", "ops-team")
            .header("x-palisade-key-set", "named")
            .header("x-palisade-key-roles", "admin")
    };
    let s = seen(forged(c.get(gw.https_url("/open"))).send().await.unwrap()).await;
    assert!(s.header("x-palisade-key-id").is_none());
    assert!(s.header("x-palisade-key-set").is_none());
    assert!(s.header("x-palisade-key-roles").is_none());
    let s = seen(
        forged(c.get(gw.https_url("/api")))
            .header("x-api-key", OLD)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(s.header("x-palisade-key-id").unwrap().starts_with("key-"));
    assert_eq!(s.header("x-palisade-key-set").as_deref(), Some("current"));
    assert!(
        s.header("x-palisade-key-roles").is_none(),
        "the forged roles were kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_and_query_credentials_are_removed_before_proxying_and_never_logged() {
    let app = Upstream::start("app").await;
    let gw = start(&app, &format!("current = \"{OLD}\"\n")).await;
    let c = gw.client();

    let r = c
        .get(gw.https_url("/bearer"))
        .header("authorization", format!("Basic {NEW}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"tokens\"");
    gateway_error(r, 401).await;
    let s = seen(
        c.get(gw.https_url("/bearer/x"))
            .bearer_auth(NEW)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(
        s.header("authorization").is_none(),
        "the token was forwarded"
    );
    assert_eq!(s.header("x-palisade-key-set").as_deref(), Some("current"));

    let url = gw.https_url(&format!("/legacy-api/items?page=2&api_key={NEW}&sort=asc"));
    let r = c.get(&url).send().await.unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let s = seen(r).await;
    assert_eq!(s.path(), "/legacy-api/items");
    assert_eq!(s.query(), Some("page=2&sort=asc"));
    let s = seen(
        c.get(gw.https_url(&format!("/legacy-api?api_key={NEW}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s.query(), None);
    let r = c
        .get(gw.https_url("/legacy-api?api_key=pk_test_wrong_0123456789abcdef"))
        .send()
        .await
        .unwrap();
    gateway_error(r, 401).await;

    let line = gw.access_line(&id).await;
    assert_eq!(line["path"], "/legacy-api/items");
    assert!(line["key_id"].as_str().unwrap().starts_with("key-"));
    assert_no_secrets(&gw, &[OLD, NEW, "pk_test_wrong"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_limits_count_each_key_on_its_own() {
    let app = Upstream::start("app").await;
    let gw = start(&app, &format!("current = \"{OLD},{NEW}\"\n")).await;
    let c = gw.client();
    let get = |key: &'static str| {
        c.get(gw.https_url("/metered"))
            .header("x-api-key", key)
            .send()
    };
    for _ in 0..2 {
        let r = get(OLD).await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"per_key\";r="));
    }
    let r = get(OLD).await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        get(NEW).await.unwrap().status(),
        200,
        "another key has its own quota"
    );
    // A refused key is not counted against anyone's quota: it never gets that far.
    let r = c.get(gw.https_url("/metered")).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_from_current_to_next_by_sighup_with_no_failed_request() {
    let app = Upstream::start("app").await;
    let work = Workdir::new();
    work.cert("main", &["localhost", "127.0.0.1"]);
    work.write("keys-current", &format!("# clients in production\n{OLD}\n"));
    work.write("keys-next", "# nothing being rolled out\n");
    let sources = "current = { file = \"keys-current\" }\nnext = { file = \"keys-next\" }\n";
    let gw = Gateway::start_in(work, &config(&app, sources), &[("TEST_TOKENS", NEW)]).await;

    // Clients switch keys by reading `key`; every response must be a 200.
    let key = Arc::new(std::sync::Mutex::new(OLD));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (c, url) = (gw.client(), gw.https_url("/api/orders"));
        let (key, stop, ok, failed) = (key.clone(), stop.clone(), ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let k = *key.lock().unwrap();
                match c.get(&url).header("x-api-key", k).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(r) => {
                        eprintln!("rotation: {} with {}", r.status(), &k[..12]);
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        eprintln!("rotation: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    let served = |n: usize| {
        let ok = ok.clone();
        async move {
            let target = ok.load(Ordering::Relaxed) + n;
            while ok.load(Ordering::Relaxed) < target {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    served(20).await;
    // 1. The new key is added to `next`.
    gw.work.write("keys-next", &format!("{NEW}\n"));
    assert_eq!(gw.reload(&config(&app, sources)).await, "success");
    served(20).await;
    // 2. Clients move to it.
    *key.lock().unwrap() = NEW;
    served(20).await;
    // 3. It is promoted to `current`, and the old key dropped.
    gw.work.write("keys-current", &format!("{NEW}\n"));
    gw.work.write("keys-next", "");
    assert_eq!(gw.reload(&config(&app, sources)).await, "success");
    served(20).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during the rotation"
    );
    assert!(ok.load(Ordering::Relaxed) >= 80);

    let c = gw.client();
    let r = c
        .get(gw.https_url("/api"))
        .header("x-api-key", OLD)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the old key is gone");
    let m = gw.metrics().await;
    assert!(
        metric(
            &m,
            "gateway_api_key_auth_total{policy=\"clients\",result=\"ok\",set=\"next\"} "
        ) > 0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "gateway_api_key_auth_total{policy=\"clients\",result=\"ok\",set=\"current\"} "
        ) > 0,
        "{m}"
    );
    assert_no_secrets(&gw, &[OLD, NEW]);
}

#[test]
fn key_config_errors_name_the_file_line_and_key_and_never_the_key() {
    let work = Workdir::new();
    let path = work.write(
        "gateway.toml",
        "[upstreams.app]\nservers = [\"127.0.0.1:3000\"]\n\n[api_keys.clients]\ncurrent = \"tooshort-9\"\n\n[rate_limits.per_key]\nkey = \"api_key\"\nlimit = 5\nper = \"1m\"\n\n[[routes]]\nname = \"open\"\nupstream = \"app\"\nrate_limits = [\"per_key\"]\nauth = { api_keys = \"clinets\" }\n",
    );
    let (code, _, err) = crate::harness::check(&path);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("gateway.toml:5:1: api_keys.clients.current: key 1: a key is shorter than 16 characters"), "{err}");
    assert!(
        err.contains("routes[0].auth.api_keys: unknown API key policy `clinets`; defined: clients"),
        "{err}"
    );
    assert!(!err.contains("tooshort-9"), "{err}");

    let path = work.write(
        "gateway.toml",
        "[upstreams.app]\nservers = [\"127.0.0.1:3000\"]\n\n[rate_limits.per_key]\nkey = \"api_key\"\nlimit = 5\nper = \"1m\"\n\n[[routes]]\nname = \"open\"\nupstream = \"app\"\nrate_limits = [\"per_key\"]\n",
    );
    let (code, _, err) = crate::harness::check(&path);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains(
            "routes[0].rate_limits: `per_key` counts per API key, but route `open` has no `auth`"
        ),
        "{err}"
    );
}

#[test]
fn keys_new_prints_a_key_and_the_digest_keys_hash_agrees_with() {
    let out = std::process::Command::new(BIN)
        .args(["keys", "new", "--prefix", "pk_live_"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let (key, printed_digest) = (lines[0], lines[1]);
    assert!(key.starts_with("pk_live_") && key.len() >= 8 + 40, "{key}");
    assert_eq!(printed_digest, digest(key));

    let mut child = std::process::Command::new(BIN)
        .args(["keys", "hash"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("# keys\n{key}\n\n{OLD}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text, format!("{}\n{}\n", digest(key), digest(OLD)));
    assert!(!text.contains(key));
}

fn webhook_config(app: &Upstream) -> String {
    format!(
        r#"{TLS_BASICS}
[upstreams.app]
servers = ["{}"]

[[routes]]
name = "stripe"
path = "/hooks/stripe"
methods = ["POST"]
upstream = "app"
max_body = "64KiB"
webhook = {{ scheme = "stripe", secret = [{{ env = "OLD_WHSEC" }}, {{ env = "STRIPE_WHSEC" }}], tolerance = "5m" }}

[[routes]]
name = "github"
path = "/hooks/github"
upstream = "app"
webhook = {{ scheme = "hmac-sha256", secret = {{ env = "HUB_SECRET" }} }}
"#,
        app.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_signatures_are_verified_before_the_app_sees_the_body() {
    let app = Upstream::start("app").await;
    let work = Workdir::new();
    work.cert("main", &["localhost", "127.0.0.1"]);
    let env = [
        ("STRIPE_WHSEC", STRIPE_SECRET),
        ("OLD_WHSEC", "whsec_old_0123456789abcdefghijk"),
        ("HUB_SECRET", HUB_SECRET),
    ];
    let gw = Gateway::start_in(work, &webhook_config(&app), &env).await;
    let c = gw.client();
    let url = gw.https_url("/hooks/stripe");
    let body = r#"{"id":"evt_1NG8Du2eZvKYlo2C","object":"event","type":"invoice.paid"}"#;
    let stripe = |secret: &str, t: u64, payload: &str| {
        let v1 = hmac_sha256(secret.as_bytes(), format!("{t}.{payload}").as_bytes());
        format!("t={t},v1={v1},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39")
    };
    let post = |sig: String, payload: &'static str| {
        c.post(&url)
            .header("stripe-signature", sig)
            .header("content-type", "application/json")
            .body(payload)
            .send()
    };
    let now = now_secs();

    let s = seen(post(stripe(STRIPE_SECRET, now, body), body).await.unwrap()).await;
    assert_eq!(
        s.body_sha256(),
        hex(&Sha256::digest(body.as_bytes())),
        "forwarded byte for byte"
    );
    // The retiring secret is accepted too, and a header with several v1 values.
    seen(
        post(stripe("whsec_old_0123456789abcdefghijk", now, body), body)
            .await
            .unwrap(),
    )
    .await;
    let several = format!(
        "t={now},v1={},{}",
        "ab".repeat(32),
        stripe(STRIPE_SECRET, now, body).split(',').nth(1).unwrap()
    );
    seen(post(several, body).await.unwrap()).await;
    assert_eq!(app.complete_bodies(), 3);

    let cases = [
        (
            "wrong secret",
            stripe("whsec_wrong_0123456789abcdefghi", now, body),
            body,
            "does not match",
        ),
        (
            "tampered body",
            stripe(STRIPE_SECRET, now, body),
            r#"{"id":"evt_1NG8Du2eZvKYlo2C","object":"event","type":"invoice.paid","amount":1}"#,
            "does not match",
        ),
        (
            "stale timestamp",
            stripe(STRIPE_SECRET, now - 600, body),
            body,
            "outside the tolerance",
        ),
        ("no v1", format!("t={now}"), body, "malformed"),
    ];
    for (what, sig, payload, message) in cases {
        let r = post(sig, payload).await.unwrap();
        let err = gateway_error(r, 401).await;
        assert!(
            err["error"].as_str().unwrap().contains(message),
            "{what}: {err}"
        );
    }
    let r = c.post(&url).body(body).send().await.unwrap();
    assert!(gateway_error(r, 401).await["error"]
        .as_str()
        .unwrap()
        .contains("missing"));
    assert_eq!(
        app.complete_bodies(),
        3,
        "a refused webhook body reached the app whole"
    );

    // GitHub style: `sha256=<hex>` over the body.
    let hub = gw.https_url("/hooks/github");
    let sig = format!(
        "sha256={}",
        hmac_sha256(HUB_SECRET.as_bytes(), b"{\"zen\":\"hi\"}")
    );
    let r = c
        .post(&hub)
        .header("x-hub-signature-256", &sig)
        .body("{\"zen\":\"hi\"}")
        .send()
        .await
        .unwrap();
    seen(r).await;
    let r = c
        .post(&hub)
        .header("x-hub-signature-256", &sig)
        .body("{\"zen\":\"ho\"}")
        .send()
        .await
        .unwrap();
    gateway_error(r, 401).await;
    // No body at all: refused before an upstream is chosen, counted once like the others.
    let r = c.post(&hub).send().await.unwrap();
    assert!(gateway_error(r, 401).await["error"]
        .as_str()
        .unwrap()
        .contains("missing"));

    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "gateway_webhook_verifications_total{result=\"ok\",route=\"stripe\"} "
        ),
        3,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "gateway_webhook_verifications_total{result=\"mismatch\",route=\"stripe\"} "
        ),
        2,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "gateway_webhook_verifications_total{result=\"stale\",route=\"stripe\"} "
        ),
        1,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "gateway_requests_rejected_total{reason=\"webhook_signature\",route=\"github\"} "
        ) == 2,
        "{m}"
    );
    assert_no_secrets(
        &gw,
        &[STRIPE_SECRET, HUB_SECRET, "whsec_old_0123456789abcdefghijk"],
    );
}
