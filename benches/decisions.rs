//! Criterion benchmarks for the per-request decisions: the limiter (one key, two threads on
//! one key, many keys, and the memory 1M keys take), route matching, header application, CORS
//! and the API key lookup.
//! Run with `cargo bench --bench decisions`; the figures are in the README.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use palisade::config::{Diagnostics, KeyPath};
use palisade::policy::api_key::{ApiKeyPolicy, ApiKeysConfig};
use palisade::policy::cors::{CorsConfig, CorsPolicy};
use palisade::policy::headers::{HeaderForm, HeaderPolicy, HeadersConfig, ResponseLines};
use palisade::policy::rate_limit::gcra::Rate;
use palisade::policy::rate_limit::local::LocalTable;
use palisade::router::{normalize_prefix, HostMatch, Matchable, Router};

const MINUTE_US: u64 = 60_000_000;

/// A limit that never trips, so every iteration does the full allowed path.
fn open_table(max_keys: usize) -> LocalTable {
    LocalTable::new(Rate::new(u32::MAX, MINUTE_US, u32::MAX), max_keys)
}

fn limiter(c: &mut Criterion) {
    let table = open_table(1_000_000);
    let ip = [203u8, 0, 113, 7];
    c.bench_function("rate_limit/local decision, one key", |b| {
        let mut now = 0u64;
        b.iter(|| {
            now += 1;
            let key = table.key(std::iter::once(&ip[..]));
            black_box(table.check(key, now))
        })
    });

    c.bench_function("rate_limit/local decision, 100k keys round robin", |b| {
        let mut i = 0u32;
        b.iter(|| {
            i = (i + 1) % 100_000;
            let key = table.key(std::iter::once(&i.to_le_bytes()[..]));
            black_box(table.check(key, u64::from(i)))
        })
    });

    // Two threads hammering the same key: the time each decision takes, seen by one thread.
    let shared = Arc::new(open_table(1_000));
    c.bench_function("rate_limit/local decision, two threads on one key", |b| {
        b.iter_custom(|iters| {
            let barrier = Arc::new(Barrier::new(2));
            let other = {
                let (table, barrier) = (shared.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    for n in 0..iters {
                        let key = table.key(std::iter::once(&ip[..]));
                        black_box(table.check(key, n));
                    }
                })
            };
            barrier.wait();
            let start = Instant::now();
            for n in 0..iters {
                let key = shared.key(std::iter::once(&ip[..]));
                black_box(shared.check(key, n));
            }
            let elapsed = start.elapsed();
            let _ = other.join();
            elapsed
        })
    });
}

struct Route {
    host: HostMatch,
    prefix: String,
}

impl Matchable for Route {
    fn host(&self) -> &HostMatch {
        &self.host
    }
    fn prefix(&self) -> &str {
        &self.prefix
    }
}

fn routing(c: &mut Criterion) {
    let mut routes = Vec::new();
    for i in 0..30 {
        routes.push(Arc::new(Route {
            host: if i % 3 == 0 {
                HostMatch::Any
            } else {
                HostMatch::parse(&format!("svc{i}.example.com")).unwrap()
            },
            prefix: normalize_prefix(&format!("/api/v{i}/items")).unwrap(),
        }));
    }
    let router = Router::new(routes);
    c.bench_function("router/find among 30 routes", |b| {
        b.iter(|| {
            black_box(router.find(
                black_box("svc29.example.com"),
                black_box("/api/v29/items/42"),
            ))
        })
    });
}

fn headers(c: &mut Criterion) {
    let mut diags = Diagnostics::default();
    let policy = HeaderPolicy::compile(
        &HeadersConfig::preset("strict-api"),
        &KeyPath::root(),
        &mut diags,
    )
    .unwrap();
    let mut template = pingora_http::ResponseHeader::build(200, None).unwrap();
    for (n, v) in [
        ("server", "Werkzeug/2.0"),
        ("x-powered-by", "Express"),
        ("set-cookie", "session=abc; Path=/"),
        ("content-type", "application/json"),
    ] {
        template.append_header(n, v).unwrap();
    }
    for (form, what) in [
        (HeaderForm::Map, "HTTP/2, map"),
        (HeaderForm::H1Lines, "HTTP/1.1, lines"),
    ] {
        let name = format!("headers/apply strict-api to a legacy response ({what})");
        c.bench_function(&name, |b| {
            b.iter_batched(
                || template.clone(),
                |mut h| {
                    policy.apply(&mut h, true, form).unwrap();
                    h
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
}

fn cors(c: &mut Criterion) {
    let cfg: CorsConfig = toml::from_str(
        r#"allow_origins = ["https://app.example.com", "https://admin.example.com", "https://*.example.org"]
allow_methods = ["GET", "POST"]
allow_credentials = true
expose_headers = ["X-Request-Id"]"#,
    )
    .unwrap();
    let mut diags = Diagnostics::default();
    let policy = CorsPolicy::compile("site", &cfg, &mut diags).unwrap();
    let origin = http::HeaderValue::from_static("https://shop.eu.example.org");
    let mut template = pingora_http::ResponseHeader::build(200, None).unwrap();
    template
        .append_header("access-control-allow-origin", "*")
        .unwrap();
    template
        .append_header("content-type", "application/json")
        .unwrap();
    for (form, what) in [
        (HeaderForm::Map, "HTTP/2, map"),
        (HeaderForm::H1Lines, "HTTP/1.1, lines"),
    ] {
        let name = format!("cors/apply to a response, wildcard origin allowed ({what})");
        c.bench_function(&name, |b| {
            b.iter_batched(
                || template.clone(),
                |mut h| {
                    let mut lines = ResponseLines::new(form);
                    policy
                        .apply(&mut h, Some(black_box(&origin)), &mut lines, false)
                        .unwrap();
                    h
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
}

fn api_keys(c: &mut Criterion) {
    // 100 keys in `current`: the lookup compares against every digest, whichever matches.
    let keys: Vec<String> = (0..100).map(|i| format!("pk_bench_{i:0>32}")).collect();
    let cfg: ApiKeysConfig = toml::from_str(&format!("current = \"{}\"", keys.join(","))).unwrap();
    let mut diags = Diagnostics::default();
    let policy =
        ApiKeyPolicy::compile("bench", &cfg, std::path::Path::new("."), &mut diags).unwrap();
    // A wrong key is never remembered: SHA-256 and the 100 digests every time, as a key's
    // first request on a thread.
    let mut wrong = http::HeaderMap::new();
    let guess = format!("pk_bench_{:0>32}", 1000);
    wrong.insert("x-api-key", http::HeaderValue::from_str(&guess).unwrap());
    c.bench_function("api_key/a key not seen before among 100 keys", |b| {
        b.iter(|| {
            black_box(
                policy
                    .authenticate(black_box(&wrong), None, &[], 0)
                    .result(),
            )
        })
    });
    // A key accepted before on this thread: its keyed hash and one remembered slot.
    let mut headers = http::HeaderMap::new();
    headers.insert("x-api-key", http::HeaderValue::from_str(&keys[57]).unwrap());
    c.bench_function("api_key/a key accepted before among 100 keys", |b| {
        b.iter(|| {
            black_box(
                policy
                    .authenticate(black_box(&headers), None, &[], 0)
                    .result(),
            )
        })
    });
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// The memory a full table of 1M keys takes, and that it stays bounded past that.
fn memory() {
    let before = rss_bytes();
    let table = open_table(1_000_000);
    for i in 0..2_000_000u32 {
        table.check(table.key(std::iter::once(&i.to_le_bytes()[..])), 1);
    }
    let after = rss_bytes();
    let keys = table.len();
    let mib = (after.saturating_sub(before)) as f64 / (1024.0 * 1024.0);
    println!(
        "rate_limit/memory: {keys} keys held after 2,000,000 distinct keys (max_keys 1,000,000), {} evicted, {mib:.1} MiB ({:.0} bytes/key)",
        table.evictions(),
        (after.saturating_sub(before)) as f64 / keys.max(1) as f64
    );
    assert!(keys <= 1_000_000, "the table outgrew max_keys");
    assert!(mib < 128.0, "1M keys should fit in 128 MiB, took {mib:.1}");
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = limiter, routing, headers, cors, api_keys
}

fn main() {
    benches();
    memory();
    Criterion::default().configure_from_args().final_summary();
}
