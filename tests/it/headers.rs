//! Response hardening through the real binary: presets on every response (proxied and
//! gateway-made, HTTP and HTTPS), fingerprints, cookies, error masking, static files.

use reqwest::header::HeaderMap;

use crate::harness::{check, gateway_error, Gateway, Upstream, Workdir, DEAD, TLS_BASICS};

/// The API key of the `guarded` route.
const KEY: &str = "pk_test_headers_0123456789abcdef";

/// What `strict-api` must put on every HTTPS response.
const STRICT_API: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
    (
        "strict-transport-security",
        "max-age=63072000; includeSubDomains",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("x-permitted-cross-domain-policies", "none"),
    ("x-robots-tag", "noindex, nofollow"),
];

const FINGERPRINTS: &[&str] = &[
    "server",
    "x-powered-by",
    "x-aspnet-version",
    "x-drupal-cache",
    "via",
];

fn config(app: &Upstream, dead: &str) -> String {
    format!(
        r#"{TLS_BASICS}
[defaults]
headers = "strict"

[headers.strict]
preset = "strict-api"
robots = "noindex, nofollow"

[headers.debug]
preset = "baseline"
mask_errors = false
cookies = false

[[static]]
path = "/.well-known/security.txt"
body = "Contact: mailto:security@example.com\nExpires: 2099-12-31T23:59:59Z\n"

[upstreams.app]
servers = ["{}"]
[upstreams.down]
servers = ["{dead}"]
retries = 0

[[routes]]
name = "api"
path = "/api"
methods = ["GET", "POST"]
upstream = "app"

[[routes]]
name = "raw"
path = "/raw"
headers = "none"
upstream = "app"

[[routes]]
name = "debug"
path = "/debug"
headers = "debug"
upstream = "app"

[[routes]]
name = "down"
path = "/down"
upstream = "down"

[cors.site]
allow_origins = ["https://app.example.com"]

[api_keys.clients]
header = "X-API-Key"
current = "{KEY}"

[rate_limits.once]
key = "client_ip"
limit = 1
per = "1h"

[[routes]]
name = "guarded"
path = "/guarded"
cors = "site"
auth = {{ api_keys = "clients" }}
max_body = "1KiB"
content_types = ["application/json"]
upstream = "down"

[[routes]]
name = "limited"
path = "/limited"
cors = "site"
rate_limits = ["once"]
upstream = "down"
"#,
        app.addr
    )
}

async fn gateway() -> (Upstream, Gateway) {
    let app = Upstream::start("app").await;
    let dead = DEAD;
    let gw = Gateway::start(&config(&app, dead)).await;
    (app, gw)
}

/// The full strict set; HSTS only when `https`.
fn assert_strict(h: &HeaderMap, https: bool, what: &str) {
    for (name, value) in STRICT_API {
        if *name == "strict-transport-security" && !https {
            assert!(h.get(*name).is_none(), "{what}: HSTS over plain HTTP");
            continue;
        }
        assert_eq!(
            h.get(*name).and_then(|v| v.to_str().ok()),
            Some(*value),
            "{what}: {name}"
        );
        assert_eq!(h.get_all(*name).iter().count(), 1, "{what}: {name} once");
    }
    let permissions = h
        .get("permissions-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    for feature in [
        "camera=()",
        "geolocation=()",
        "microphone=()",
        "payment=()",
        "usb=()",
    ] {
        assert!(
            permissions.contains(feature),
            "{what}: permissions-policy lacks {feature}"
        );
    }
    for name in FINGERPRINTS {
        assert!(h.get(*name).is_none(), "{what}: fingerprint {name} leaked");
    }
    let ids: Vec<_> = h.get_all("x-request-id").iter().collect();
    assert_eq!(ids.len(), 1, "{what}: one request id, the gateway's");
    assert_ne!(
        ids[0], "made-up-by-the-app",
        "{what}: the gateway's request id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_app_behind_strict_api_is_hardened_over_https() {
    let (_app, gw) = gateway().await;
    // HTTP/2 takes the headers in Pingora's header map, HTTP/1.1 as ready-made lines: the
    // client must not be able to tell.
    let h2 = gw.client();
    let h1 = gw.client_builder().http1_only().build().unwrap();
    for (client, version) in [
        (h2, reqwest::Version::HTTP_2),
        (h1, reqwest::Version::HTTP_11),
    ] {
        let what = format!("proxied over https, {version:?}");
        let r = client
            .get(gw.https_url("/api/legacy"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), version);
        let h = r.headers().clone();
        assert_strict(&h, true, &what);
        // The app's own X-Frame-Options is overridden; its Cache-Control is kept (fill mode).
        assert_eq!(h["cache-control"], "private, max-age=30", "{what}");
        assert_eq!(h.get_all("cache-control").iter().count(), 1, "{what}");
        let cookies: Vec<&str> = h
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            cookies,
            vec![
                "session=abc123; Path=/; Secure; HttpOnly; SameSite=Lax",
                "theme=dark; Path=/; SameSite=Strict; Secure; HttpOnly"
            ],
            "{what}"
        );
        // An app that set no Cache-Control gets no-store.
        let r = client.get(gw.https_url("/api/plain")).send().await.unwrap();
        assert_eq!(r.headers()["cache-control"], "no-store", "{what}");
    }
}

/// Over HTTP/2 a policy's headers go as one block that the connection's HPACK encoder
/// encodes once and then copies, for as long as its dynamic table stays as it was. On one
/// connection: the strict block again and again, another policy's block between, and app
/// headers with new values that enter the table and move every entry's index. A copy made
/// before the table changed would name the wrong entries, and the client would read other
/// headers (or none) where the policy's should be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_http2_connection_gets_every_policy_header_right_as_its_table_changes() {
    let (_app, gw) = gateway().await;
    let client = gw.client_builder().http2_prior_knowledge().build().unwrap();
    let mut step = 0;
    for round in 0..4 {
        for path in [
            "/api/legacy",
            "/api/legacy",
            "/debug/x",
            "/api/legacy?token=t",
            "/api/legacy",
            "/debug/x?token=d",
            "/guarded/x",
            "/api/x",
        ] {
            step += 1;
            let path = path
                .replace("=t", &format!("=t{round}"))
                .replace("=d", &format!("=d{round}"));
            let what = format!("step {step}, {path}");
            // The guarded route: CORS and an API key in front of a dead upstream, so a
            // gateway-made answer with the CORS blocks beside the header policy's.
            let guarded = path.starts_with("/guarded");
            let mut request = client.get(gw.https_url(&path));
            if guarded {
                request = request
                    .header("x-api-key", KEY)
                    .header("origin", "https://app.example.com");
            }
            let r = request.send().await.unwrap();
            assert_eq!(r.version(), reqwest::Version::HTTP_2, "{what}");
            let h = r.headers().clone();
            if guarded {
                assert!(
                    r.status() == 502 || r.status() == 503,
                    "{what}: {}",
                    r.status()
                );
                assert_strict(&h, true, &what);
                let origins: Vec<_> = h.get_all("access-control-allow-origin").iter().collect();
                assert_eq!(origins, ["https://app.example.com"], "{what}");
                let vary: Vec<_> = h.get_all("vary").iter().collect();
                assert_eq!(vary, ["Origin"], "{what}");
                continue;
            }
            assert_eq!(r.status(), 200, "{what}");
            if path.starts_with("/debug") {
                // The baseline preset: no CSP, no robots tag, no masking.
                assert!(h.get("content-security-policy").is_none(), "{what}");
                assert!(h.get("x-robots-tag").is_none(), "{what}");
                assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
                assert_eq!(
                    h.get_all("x-content-type-options").iter().count(),
                    1,
                    "{what}"
                );
            } else {
                assert_strict(&h, true, &what);
            }
            if let Some((_, token)) = path.split_once("token=") {
                assert_eq!(h["x-app-token"], token, "{what}");
            } else {
                assert!(h.get("x-app-token").is_none(), "{what}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_plain_http_there_is_no_hsts_and_no_secure_flag() {
    let (_app, gw) = gateway().await;
    let r = gw
        .client()
        .get(gw.http_url("/api/legacy"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_strict(&h, false, "proxied over http");
    let cookies: Vec<&str> = h
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(cookies[0], "session=abc123; Path=/; HttpOnly; SameSite=Lax");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gateway_made_response_carries_the_full_set() {
    let (app, gw) = gateway().await;
    let c = gw.client();
    // HTTPS over HTTP/2 and over HTTP/1.1 (ready-made header lines, with HSTS), and plain
    // HTTP/1.1 (lines, without).
    let h1 = gw.client_builder().http1_only().build().unwrap();
    for (https, c) in [(true, c.clone()), (true, h1), (false, c.clone())] {
        let url = |p: &str| {
            if https {
                gw.https_url(p)
            } else {
                gw.http_url(p)
            }
        };
        let cases = [
            ("404", c.get(url("/nowhere")).send().await.unwrap(), 404),
            ("405", c.delete(url("/api/x")).send().await.unwrap(), 405),
            ("502/503", c.get(url("/down/x")).send().await.unwrap(), 0),
        ];
        for (what, r, status) in cases {
            let h = r.headers().clone();
            let what = format!("{what} {:?}", r.version());
            assert_strict(&h, https, &what);
            if status != 0 {
                gateway_error(r, status).await;
            } else {
                assert!(
                    r.status() == 502 || r.status() == 503,
                    "{what}: {}",
                    r.status()
                );
            }
        }
        // The refusals of a route's policies: the headers, the route's CORS and the request
        // id on each.
        const ORIGIN: &str = "https://app.example.com";
        let guarded = || c.post(url("/guarded/x")).header("Origin", ORIGIN);
        let _ = c.get(url("/limited/x")).send().await.unwrap();
        let refusals = [
            ("401", guarded().send().await.unwrap(), 401),
            (
                "413",
                guarded()
                    .header("X-API-Key", KEY)
                    .header("Content-Type", "application/json")
                    .body(vec![b' '; 2000])
                    .send()
                    .await
                    .unwrap(),
                413,
            ),
            (
                "415",
                guarded()
                    .header("X-API-Key", KEY)
                    .header("Content-Type", "text/plain")
                    .body("hi")
                    .send()
                    .await
                    .unwrap(),
                415,
            ),
            (
                "429",
                c.get(url("/limited/x"))
                    .header("Origin", ORIGIN)
                    .send()
                    .await
                    .unwrap(),
                429,
            ),
        ];
        for (what, r, status) in refusals {
            let h = r.headers().clone();
            let what = format!("{what} {:?}", r.version());
            assert_strict(&h, https, &what);
            assert_eq!(h["access-control-allow-origin"], ORIGIN, "{what}");
            assert!(
                h.get_all("vary").iter().any(|v| v == "Origin"),
                "{what}: {h:?}"
            );
            gateway_error(r, status).await;
        }
        let r = c
            .get(url("/.well-known/security.txt"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_strict(r.headers(), https, "static");
        assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
        assert!(r
            .text()
            .await
            .unwrap()
            .starts_with("Contact: mailto:security@example.com"));
    }
    let r = c
        .post(gw.https_url("/.well-known/security.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    gateway_error(r, 405).await;
    assert_eq!(app.hits(), 0, "none of these reached the app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_https_redirect_carries_the_set_without_hsts() {
    let app = Upstream::start("app").await;
    let dead = DEAD;
    let gw = Gateway::start(
        &config(&app, dead).replace("redirect_https = false", "redirect_https = true"),
    )
    .await;
    let r = gw.client().get(gw.http_url("/api/x")).send().await.unwrap();
    assert_eq!(r.status(), 308);
    assert_strict(r.headers(), false, "redirect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_5xx_is_masked_keeping_its_status() {
    let (_app, gw) = gateway().await;
    let c = gw.client();
    for (path, status) in [("/api/status/500", 500), ("/api/status/503", 503)] {
        let r = c.get(gw.https_url(path)).send().await.unwrap();
        assert_strict(r.headers(), true, path);
        let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
        let body = gateway_error(r, status).await;
        assert!(!body.to_string().contains("Traceback"), "{body}");
        assert_eq!(
            body["error"],
            "the application could not answer this request"
        );
        let line = gw.access_line(&id).await;
        assert_eq!(line["decision"], "masked_error");
        assert_eq!(line["status"], status);
    }
    // An empty 5xx has nothing to leak: it stays empty, with its status and the headers.
    let r = c
        .get(gw.https_url("/api/status/502/empty"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_strict(r.headers(), true, "empty 502");
    assert!(r.bytes().await.unwrap().is_empty());
    // Over HTTP/1.1 too, and a HEAD has headers and no body.
    let h1 = gw.client_builder().http1_only().build().unwrap();
    let r = h1
        .get(gw.https_url("/api/status/500"))
        .send()
        .await
        .unwrap();
    assert!(!r.text().await.unwrap().contains("Traceback"));
    let r = h1
        .head(gw.https_url("/api/status/500"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert!(r.bytes().await.unwrap().is_empty());
    // 4xx bodies are the app's own.
    let r = c.get(gw.https_url("/api/status/404")).send().await.unwrap();
    assert!(r.text().await.unwrap().contains("Traceback"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_can_opt_out_or_pick_another_policy() {
    let (_app, gw) = gateway().await;
    let c = gw.client();
    // headers = "none": the app's response as it was, with the request id.
    let r = c.get(gw.https_url("/raw/legacy")).send().await.unwrap();
    let h = r.headers();
    assert_eq!(h["server"], "Werkzeug/2.0.1 Python/3.8.10");
    assert_eq!(h["x-frame-options"], "ALLOWALL");
    assert!(h.get("content-security-policy").is_none());
    assert!(h.contains_key("x-request-id"));
    let r = c.get(gw.https_url("/raw/status/500")).send().await.unwrap();
    assert!(
        r.text().await.unwrap().contains("Traceback"),
        "no policy, no masking"
    );

    // A baseline policy with masking and cookie hardening off.
    let r = c.get(gw.https_url("/debug/legacy")).send().await.unwrap();
    let h = r.headers();
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["strict-transport-security"], "max-age=31536000");
    assert!(h.get("content-security-policy").is_none());
    assert!(h.get("server").is_none());
    assert_eq!(h["set-cookie"], "session=abc123; Path=/");
    let r = c
        .get(gw.https_url("/debug/status/500"))
        .send()
        .await
        .unwrap();
    assert!(r.text().await.unwrap().contains("Traceback"));
}

#[test]
fn header_policy_mistakes_are_config_errors_with_their_line() {
    let work = Workdir::new();
    let text = r#"
[upstreams.app]
servers = ["127.0.0.1:9"]

[headers.strict]
preset = "strict-api"
hsts = "max-age=600; preload"

[headers.strict-api]
preset = "baseline"

[[static]]
path = "/.well-known/security.txt"
body = "Contact: mailto:a@example.com\n"

[[routes]]
name = "r"
headers = "stricter"
upstream = "app"
"#;
    let path = work.write("gateway.toml", text);
    let (code, _, err) = check(&path);
    assert_eq!(code, 78, "{err}");
    let err = err.replace(&path.display().to_string(), "gateway.toml");
    assert!(
        err.contains(
            "gateway.toml:7:1: headers.strict.hsts: preload needs max-age of at least 31536000"
        ),
        "{err}"
    );
    assert!(
        err.contains("gateway.toml:9:10: headers.strict-api: `strict-api` is a built-in name"),
        "{err}"
    );
    assert!(
        err.contains("gateway.toml:14:1: static[0].body: security.txt needs an `Expires:` line"),
        "{err}"
    );
    assert!(
        err.contains("gateway.toml:18:1: routes[0].headers: unknown header policy `stricter`"),
        "{err}"
    );
}
