//! The example configs under examples/: one per production checklist our users bring (Flask
//! API, SaaS, Flask + PostgreSQL, full stack, Rust chat API), and the legacy-app one.
//!
//! Every `examples/*.toml` — found by listing the folder, so a new example is covered without a
//! change here — is staged in a scratch folder with what it names (a development certificate
//! wherever it expects one, its JSON Schemas, a valid dummy value for each environment variable
//! it reads) and must pass `palisade check` and have no FAIL in `palisade audit`. Each checklist
//! example is then held to the checklist items it claims, read from its TOML: the comment block
//! at its top may only name routes, policies and schemas that exist. The Flask API example also
//! runs, in front of an echo upstream, and answers as its go/no-go list says.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value as Json};
use toml::Value;

use crate::harness::{Gateway, Upstream, Workdir, BIN};

/// The examples that turn a checklist of `shared/seeds` into policy.
const CHECKLIST_EXAMPLES: [&str; 5] = [
    "flask-api",
    "saas",
    "flask-postgres",
    "full-stack",
    "rust-chat-api",
];

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// Every `examples/*.toml`, sorted.
fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .expect("the examples folder")
        .map(|e| e.expect("a folder entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---------------------------------------------------------------------------------------------
// Staging an example with what it names.

/// `{ env = "NAME" }` or `{ file = "PATH" }`: a secret reference.
fn secret_ref(v: &Value) -> Option<(&str, &str)> {
    let t = v.as_table()?;
    if t.len() != 1 {
        return None;
    }
    let (kind, name) = t.iter().next()?;
    match (kind.as_str(), name.as_str()) {
        ("env", Some(n)) => Some(("env", n)),
        ("file", Some(p)) => Some(("file", p)),
        _ => None,
    }
}

/// Every secret reference in a config: (key path, `env` or `file`, name or path).
fn secret_refs(v: &Value, path: &str, out: &mut Vec<(String, String, String)>) {
    if let Some((kind, name)) = secret_ref(v) {
        out.push((path.to_string(), kind.to_string(), name.to_string()));
        return;
    }
    match v {
        Value::Table(t) => {
            for (k, v) in t {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                secret_refs(v, &p, out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                secret_refs(v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// A valid stand-in for the environment variable `name` read at `path` (not a TLS key: those
/// get the development key).
fn dummy_env(example: &str, path: &str, name: &str) -> String {
    let tag = name.to_ascii_lowercase().replace('_', "-");
    if path.starts_with("redis.") {
        "redis://127.0.0.1:6379".into()
    } else if path.starts_with("api_keys.") {
        // A plain key needs 16 characters; each variable gets its own.
        format!("test-{tag}-0123456789abcdef")
    } else if path.starts_with("routes[") && path.contains(".webhook.") {
        format!("whsec_test_{tag}_0123456789abcdef")
    } else {
        panic!("{example}: no test value for the environment variable {name} ({path})")
    }
}

/// An example in a scratch folder, ready for `palisade check` and `audit`.
struct Staged {
    _work: Workdir,
    file: PathBuf,
    /// The environment it reads, with valid values, in the order the config names them.
    env: Vec<(String, String)>,
}

fn stage(source: &Path) -> Staged {
    let example = source.file_name().unwrap().to_string_lossy().into_owned();
    let text = std::fs::read_to_string(source).unwrap_or_else(|e| panic!("{example}: {e}"));
    let config: Value = toml::from_str(&text).unwrap_or_else(|e| panic!("{example}: {e}"));
    let work = Workdir::new();
    let dir = work.path().join("examples");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let pair = work.cert("generated", &["localhost", "127.0.0.1", "example.com"]);
    let mut staged = text.clone();
    let mut placed = 0;
    // Puts `from` where the config names `path`: beside the config when relative; elsewhere in
    // the scratch folder when absolute (like /etc/palisade/...), with the config rewritten.
    let mut place = |path: &str, from: &Path, staged: &mut String| {
        if Path::new(path).is_absolute() {
            placed += 1;
            let to = work.path().join("absolute").join(format!("{placed}.pem"));
            std::fs::create_dir_all(to.parent().unwrap()).expect("mkdir");
            std::fs::copy(from, &to).expect("copy");
            *staged = staged.replace(&format!("\"{path}\""), &format!("\"{}\"", to.display()));
        } else {
            let to = dir.join(path);
            std::fs::create_dir_all(to.parent().unwrap()).expect("mkdir");
            std::fs::copy(from, &to).unwrap_or_else(|e| panic!("{example}: {path}: {e}"));
        }
    };
    let cert = pair.join("dev.pem");
    let key = pair.join("dev-key.pem");
    let key_pem = std::fs::read_to_string(&key).expect("dev key");
    let mut env = Vec::new();
    let empty = Vec::new();
    let certificates = config
        .get("tls")
        .and_then(|t| t.get("certificates"))
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    for c in certificates {
        place(
            c["cert"].as_str().expect("tls.certificates.cert"),
            &cert,
            &mut staged,
        );
    }
    for upstream in config
        .get("upstreams")
        .and_then(Value::as_table)
        .into_iter()
        .flat_map(|t| t.values())
    {
        if let Some(ca) = upstream.get("ca_file").and_then(Value::as_str) {
            place(ca, &cert, &mut staged);
        }
    }
    for route in config
        .get("routes")
        .and_then(Value::as_array)
        .unwrap_or(&empty)
    {
        if let Some(schema) = route.get("schema").and_then(Value::as_str) {
            assert!(
                Path::new(schema).is_relative(),
                "{example}: {schema}: name schemas relative to the example"
            );
            place(schema, &examples_dir().join(schema), &mut staged);
        }
    }
    let mut refs = Vec::new();
    secret_refs(&config, "", &mut refs);
    for (path, kind, name) in refs {
        let tls_key = path.starts_with("tls.certificates[") && path.ends_with(".key");
        match (kind.as_str(), tls_key) {
            ("file", true) => place(&name, &key, &mut staged),
            ("env", true) => env.push((name, key_pem.clone())),
            ("env", false) => {
                let value = dummy_env(&example, &path, &name);
                env.push((name, value));
            }
            _ => panic!(
                "{example}: {path} reads the file {name}, which this test cannot stand in for"
            ),
        }
    }
    let file = dir.join(&example);
    std::fs::write(&file, staged).expect("write the staged config");
    Staged {
        _work: work,
        file,
        env,
    }
}

/// Runs palisade with `env` (and nothing else of the environment the example reads).
fn palisade(args: &[&str], staged: &Staged, env: &[(String, String)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).arg(&staged.file);
    for (k, _) in &staged.env {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.output().expect("run palisade")
}

/// What is wrong with one example under `check` and `audit`, if anything.
fn check_and_audit(source: &Path) -> Vec<String> {
    let name = source.file_name().unwrap().to_string_lossy().into_owned();
    let staged = stage(source);
    let mut problems = Vec::new();
    let out = palisade(&["check"], &staged, &staged.env);
    if !out.status.success() || !String::from_utf8_lossy(&out.stdout).contains("ok:") {
        problems.push(format!(
            "{name}: palisade check failed:\n{}",
            output_text(&out)
        ));
    }
    // The variables are really read: without them the config is refused, by name.
    if let Some((first, _)) = staged.env.first() {
        let out = palisade(&["check"], &staged, &[]);
        if out.status.code() != Some(78) || !output_text(&out).contains(first.as_str()) {
            problems.push(format!(
                "{name}: palisade check without {first} should exit 78 naming it:\n{}",
                output_text(&out)
            ));
        }
    }
    let out = palisade(&["audit", "--format", "json"], &staged, &staged.env);
    match serde_json::from_slice::<Json>(&out.stdout) {
        Err(e) => problems.push(format!(
            "{name}: palisade audit printed no JSON ({e}):\n{}",
            output_text(&out)
        )),
        Ok(findings) => {
            let findings = findings.as_array().cloned().unwrap_or_default();
            if findings.is_empty() {
                problems.push(format!("{name}: palisade audit graded nothing"));
            }
            let failed: Vec<&Json> = findings.iter().filter(|f| f["grade"] == "FAIL").collect();
            if !failed.is_empty() || !out.status.success() {
                problems.push(format!("{name}: palisade audit fails: {failed:#?}"));
            }
        }
    }
    problems
}

#[test]
fn every_example_passes_check_and_has_no_failing_audit_item() {
    let files = example_files();
    for name in CHECKLIST_EXAMPLES {
        assert!(
            files.contains(&examples_dir().join(format!("{name}.toml"))),
            "examples/{name}.toml is missing"
        );
    }
    let problems: Vec<String> = files.iter().flat_map(|f| check_and_audit(f)).collect();
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

// ---------------------------------------------------------------------------------------------
// Reading an example.

struct Example {
    name: &'static str,
    text: String,
    config: Value,
}

impl Example {
    fn load(name: &'static str) -> Example {
        let path = examples_dir().join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let config = toml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        Example { name, text, config }
    }

    fn routes(&self) -> Vec<&Value> {
        self.config
            .get("routes")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default()
    }

    fn route(&self, name: &str) -> &Value {
        self.routes()
            .into_iter()
            .find(|r| r.get("name").and_then(Value::as_str) == Some(name))
            .unwrap_or_else(|| panic!("{}: no route `{name}`", self.name))
    }

    /// The route that serves `path` for any host (the longest matching prefix).
    fn route_for(&self, path: &str) -> &Value {
        self.routes()
            .into_iter()
            .filter(|r| r.get("host").is_none())
            .filter(|r| {
                let prefix = r.get("path").and_then(Value::as_str).unwrap_or("/");
                let prefix = prefix.trim_end_matches('/');
                path == prefix || path.starts_with(&format!("{prefix}/"))
            })
            .max_by_key(|r| r.get("path").and_then(Value::as_str).unwrap_or("/").len())
            .unwrap_or_else(|| panic!("{}: no route serves {path}", self.name))
    }

    fn table(&self, section: &str, name: &str) -> &Value {
        self.config
            .get(section)
            .and_then(|s| s.get(name))
            .unwrap_or_else(|| panic!("{}: no [{section}.{name}]", self.name))
    }

    fn tables(&self, section: &str) -> Vec<(&String, &Value)> {
        self.config
            .get(section)
            .and_then(Value::as_table)
            .map(|t| t.iter().collect())
            .unwrap_or_default()
    }

    /// A route's own setting, else the `[defaults]` one.
    fn effective<'a>(&'a self, route: &'a Value, key: &str) -> Option<&'a Value> {
        route
            .get(key)
            .or_else(|| self.config.get("defaults").and_then(|d| d.get(key)))
    }

    /// The `[headers.NAME]` table a route's responses get.
    fn headers(&self, route: &Value) -> &Value {
        let name = self
            .effective(route, "headers")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{}: {} has no header policy", self.name, route_name(route)));
        self.table("headers", name)
    }

    /// The `[rate_limits.NAME]` tables a route is under, in order.
    fn limits(&self, route: &Value) -> Vec<&Value> {
        self.effective(route, "rate_limits")
            .and_then(Value::as_array)
            .map(|names| {
                names
                    .iter()
                    .map(|n| self.table("rate_limits", n.as_str().expect("a policy name")))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether a route is under a limit of `limit` per `per_secs` keyed on `key`.
    fn has_limit(&self, route: &Value, key: &str, limit: i64, per_secs: u64) -> bool {
        self.limits(route).iter().any(|l| {
            l.get("key").and_then(Value::as_str) == Some(key)
                && l.get("limit").and_then(Value::as_integer) == Some(limit)
                && seconds(l["per"].as_str().expect("per")) == per_secs
        })
    }

    fn max_body(&self, route: &Value) -> u64 {
        route
            .get("max_body")
            .or_else(|| self.config["server"].get("max_body"))
            .map(bytes)
            .unwrap_or(1 << 20)
    }

    /// The comment block at the top of the file.
    fn preamble(&self) -> String {
        self.text
            .lines()
            .take_while(|l| l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn route_name(route: &Value) -> &str {
    route.get("name").and_then(Value::as_str).unwrap_or("?")
}

fn str_list(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn env_name(v: Option<&Value>) -> Option<&str> {
    match secret_ref(v?) {
        Some(("env", name)) => Some(name),
        _ => None,
    }
}

/// A size as the config writes it: `"512KB"` (KB = 1000), `"16MiB"`, or a number of bytes.
fn bytes(v: &Value) -> u64 {
    if let Some(n) = v.as_integer() {
        return n as u64;
    }
    let s = v.as_str().expect("a size");
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..split].parse().expect("a number");
    n * match s[split..].trim() {
        "" | "B" => 1,
        "KB" => 1000,
        "KiB" => 1024,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        other => panic!("unknown size unit {other}"),
    }
}

/// A duration as the config writes it, in seconds: `"30s"`, `"1m"`, `"2h"`, `"1d"`.
fn seconds(s: &str) -> u64 {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u64 = s[..split].parse().expect("a number");
    n * match &s[split..] {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => panic!("unknown duration unit {other}"),
    }
}

/// Names made of `A-Z a-z 0-9 _ -` that follow `prefix` in `text`.
fn names_after<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.match_indices(prefix)
        .map(|(i, _)| {
            let rest = &text[i + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|n| !n.is_empty())
        .collect()
}

#[test]
fn checklist_examples_map_their_items_to_lines_that_exist() {
    for name in CHECKLIST_EXAMPLES {
        let ex = Example::load(name);
        let preamble = ex.preamble();
        for heading in ["Enforced here", "Left to the app"] {
            assert!(
                preamble.contains(heading),
                "{name}: the comment block at the top needs a `{heading}` part"
            );
        }
        for route in names_after(&preamble, "routes.") {
            ex.route(route);
        }
        for section in [
            "headers",
            "rate_limits",
            "lockouts",
            "cors",
            "api_keys",
            "upstreams",
        ] {
            let prefix = format!("[{section}.");
            for (i, _) in preamble.match_indices(&prefix) {
                let rest = &preamble[i + prefix.len()..];
                let Some(end) = rest.find(']') else { continue };
                let policy = &rest[..end];
                if policy
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    ex.table(section, policy);
                }
            }
        }
        for schema in names_after(&preamble, "schemas/") {
            let file = examples_dir()
                .join("schemas")
                .join(format!("{schema}.json"));
            assert!(file.is_file(), "{name} names {}", file.display());
        }
        assert!(
            !preamble.contains("TODO"),
            "{name}: the comment block is unfinished"
        );
    }
}

/// A JSON Schema of examples/schemas.
fn schema(file: &str) -> Json {
    let text = std::fs::read_to_string(examples_dir().join(file))
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Every string property of an object schema has a maxLength, so no field is unbounded.
fn assert_strings_bounded(file: &str) {
    let s = schema(file);
    let props = s["properties"].as_object().expect("properties");
    assert!(!props.is_empty());
    for (field, p) in props {
        if p["type"] == "string" && p.get("pattern").is_none() {
            assert!(
                p["maxLength"].is_u64(),
                "{file}: `{field}` has no maxLength"
            );
        }
    }
    assert_eq!(
        s["additionalProperties"], false,
        "{file}: unknown fields pass"
    );
}

// ---------------------------------------------------------------------------------------------
// Each checklist, item by item.

#[test]
fn flask_api_example_has_the_go_no_go_values() {
    let ex = Example::load("flask-api");
    // Exact header values, on every route.
    for route in ex.routes() {
        let h = ex.headers(route);
        let what = format!("flask-api route {}", route_name(route));
        assert_eq!(
            h["hsts"].as_str(),
            Some("max-age=31536000; includeSubDomains; preload"),
            "{what}"
        );
        let csp = h["csp"].as_str().expect("csp");
        assert!(csp.starts_with("default-src 'none'"), "{what}: {csp}");
        for (header, value) in [
            ("Cross-Origin-Opener-Policy", "same-origin"),
            ("Cross-Origin-Embedder-Policy", "require-corp"),
            ("X-Frame-Options", "DENY"),
            ("X-Content-Type-Options", "nosniff"),
        ] {
            assert_eq!(h["set"][header].as_str(), Some(value), "{what}: {header}");
        }
        assert_ne!(h.get("mask_errors"), Some(&Value::Boolean(false)), "{what}");
        // 20/min per IP (a burst of 20: X-RateLimit-Limit says 20) and 200/min in all.
        assert!(
            ex.has_limit(route, "client_ip", 20, 60),
            "{what}: 20/min per IP"
        );
        assert!(
            ex.has_limit(route, "global", 200, 60),
            "{what}: 200/min global"
        );
        assert!(ex.max_body(route) <= 512_000, "{what}: over 512KB");
    }
    let per_ip = ex
        .limits(ex.route("jobs"))
        .into_iter()
        .find(|l| l["key"].as_str() == Some("client_ip"))
        .expect("a per-IP limit");
    assert_eq!(per_ip.get("burst").and_then(Value::as_integer), Some(20));
    assert_eq!(bytes(&ex.config["server"]["max_body"]), 512_000);

    // Job payloads: 200KB, JSON, the schema's field lengths and http(s)-only callback URLs.
    let jobs = ex.route_for("/api/jobs");
    assert_eq!(route_name(jobs), "jobs");
    assert_eq!(ex.max_body(jobs), 200_000);
    assert_eq!(str_list(jobs.get("content_types")), ["application/json"]);
    assert!(str_list(jobs.get("methods")).contains(&"POST"));
    assert_eq!(jobs["schema"].as_str(), Some("schemas/job.json"));
    let job = schema("schemas/job.json");
    let props = &job["properties"];
    assert_eq!(
        (
            props["workflow"]["minLength"].as_u64(),
            props["workflow"]["maxLength"].as_u64()
        ),
        (Some(1), Some(128))
    );
    assert_eq!(
        (
            props["callback_url"]["minLength"].as_u64(),
            props["callback_url"]["maxLength"].as_u64()
        ),
        (Some(1), Some(1024))
    );
    assert_eq!(props["callback_url"]["pattern"], "^https?://");

    // API_KEYS and API_KEYS_NEXT, on the jobs route.
    let policy = jobs["auth"]["api_keys"].as_str().expect("auth on jobs");
    let keys = ex.table("api_keys", policy);
    assert_eq!(env_name(keys.get("current")), Some("API_KEYS"));
    assert_eq!(env_name(keys.get("next")), Some("API_KEYS_NEXT"));
    assert!(jobs.get("lockout").is_some(), "key guessing is not blocked");

    // security.txt and robots.txt.
    let statics: Vec<&str> = ex.config["static"]
        .as_array()
        .expect("[[static]]")
        .iter()
        .filter_map(|s| s["path"].as_str())
        .collect();
    assert!(statics.contains(&"/.well-known/security.txt"));
    assert!(statics.contains(&"/robots.txt"));
    // CORS for the site, never `*`.
    for (name, cors) in ex.tables("cors") {
        assert!(
            !str_list(cors.get("allow_origins")).contains(&"*"),
            "cors.{name}"
        );
    }
    // The app's own routes stay read-only where the checklist only reads.
    assert_eq!(
        str_list(ex.route_for("/public/openapi.json").get("methods")),
        ["GET"]
    );
    assert_eq!(str_list(ex.route_for("/").get("methods")), ["GET"]);
}

#[test]
fn saas_example_has_its_hardening_items() {
    let ex = Example::load("saas");
    // The dashboard (v2 too) is never indexed nor cached by the preset.
    let dashboard = ex.route_for("/dashboard/v2");
    let h = ex.headers(dashboard);
    assert!(h["robots"].as_str().unwrap_or_default().contains("noindex"));
    // Every policy: Referrer-Policy strict-origin-when-cross-origin or stricter, XFO DENY and
    // nosniff (both presets), cookie flags, generic errors.
    for (name, h) in ex.tables("headers") {
        let preset = h["preset"].as_str().unwrap_or("baseline");
        assert!(
            ["web-app", "strict-api"].contains(&preset),
            "headers.{name}: {preset}"
        );
        let cookies = &h["cookies"];
        assert_eq!(cookies["secure"].as_bool(), Some(true), "headers.{name}");
        assert_eq!(cookies["http_only"].as_bool(), Some(true), "headers.{name}");
        assert!(cookies["same_site"].is_str(), "headers.{name}");
        assert_ne!(h.get("mask_errors"), Some(&Value::Boolean(false)));
        if let Some(csp) = h.get("csp").and_then(Value::as_str) {
            assert!(
                !csp.contains('*'),
                "headers.{name}: a wildcard in the CSP: {csp}"
            );
        }
    }
    // Admin endpoints need a key with a role.
    let admin: Vec<&Value> = ex
        .routes()
        .into_iter()
        .filter(|r| r["path"].as_str().unwrap_or("/").contains("/admin"))
        .collect();
    assert!(!admin.is_empty());
    for r in admin {
        let roles = str_list(r.get("auth").and_then(|a| a.get("roles")));
        assert!(roles.contains(&"admin"), "{}: no role check", route_name(r));
    }
    // Stripe webhooks carry a valid signature; the secret comes from the environment.
    let stripe: Vec<&Value> = ex
        .routes()
        .into_iter()
        .filter(|r| r.get("webhook").is_some())
        .collect();
    assert_eq!(stripe.len(), 1);
    let webhook = &stripe[0]["webhook"];
    assert_eq!(webhook["scheme"].as_str(), Some("stripe"));
    assert_eq!(
        env_name(webhook.get("secret")),
        Some("STRIPE_WEBHOOK_SECRET")
    );
    assert_eq!(str_list(stripe[0].get("methods")), ["POST"]);
    // Sign-in and billing are limited per IP tighter than the rest; sign-in has a lockout.
    for name in ["signin", "auth_callback", "billing"] {
        let r = ex.route(name);
        assert!(ex.has_limit(r, "client_ip", 10, 60), "{name}");
    }
    assert!(ex.route("signin").get("lockout").is_some());
    assert!(ex.route("auth_callback").get("lockout").is_some());
    // /health answers GET only.
    assert_eq!(str_list(ex.route("health").get("methods")), ["GET"]);
}

#[test]
fn flask_postgres_example_has_its_per_endpoint_limits_in_redis() {
    let ex = Example::load("flask-postgres");
    // Shared limiter state: Redis from REDIS_URL for every policy.
    assert_eq!(env_name(ex.config["redis"].get("url")), Some("REDIS_URL"));
    let instances = ex.config["server"]
        .get("instances")
        .and_then(Value::as_integer);
    assert!(
        instances.unwrap_or(1) > 1,
        "without [server] instances, audit does not hold the limits to Redis"
    );
    for (name, limit) in ex.tables("rate_limits") {
        assert_eq!(limit["store"].as_str(), Some("redis"), "rate_limits.{name}");
    }
    // The checklist's numbers, per IP.
    for (path, limit) in [
        ("/api/auth/login", 5),
        ("/api/auth/refresh", 10),
        ("/api/files/upload", 10),
        ("/api/files/batch", 5),
        ("/api/users", 200),
        ("/health", 200),
    ] {
        let r = ex.route_for(path);
        assert!(
            ex.has_limit(r, "client_ip", limit, 60),
            "{path}: {limit}/min"
        );
    }
    assert!(ex.route_for("/api/auth/login").get("lockout").is_some());
    // CORS origins listed, never `*`.
    for (name, cors) in ex.tables("cors") {
        let origins = str_list(cors.get("allow_origins"));
        assert!(
            !origins.is_empty() && !origins.contains(&"*"),
            "cors.{name}"
        );
    }
    // 16 MB uploads, multipart only; JSON elsewhere under /api.
    for path in ["/api/files/upload", "/api/files/batch"] {
        let r = ex.route_for(path);
        assert_eq!(ex.max_body(r), 16 << 20, "{path}");
        assert_eq!(str_list(r.get("content_types")), ["multipart/form-data"]);
    }
    assert!(ex.max_body(ex.route_for("/api/users")) < 16 << 20);
    // 120 s timeouts, /health watched, cookies Secure.
    for (name, upstream) in ex.tables("upstreams") {
        assert_eq!(upstream["read_timeout"].as_str(), Some("120s"), "{name}");
        assert_eq!(upstream["health_check"]["path"].as_str(), Some("/health"));
    }
    for route in ex.routes() {
        let h = ex.headers(route);
        assert_eq!(h["cookies"]["secure"].as_bool(), Some(true));
        assert_ne!(h.get("mask_errors"), Some(&Value::Boolean(false)));
    }
}

#[test]
fn full_stack_example_has_its_launch_items() {
    let ex = Example::load("full-stack");
    // Auth endpoints: 10 attempts/minute per IP; login locks out; inputs bounded.
    for path in ["/api/auth/login", "/api/auth/register", "/api/auth/refresh"] {
        assert!(
            ex.has_limit(ex.route_for(path), "client_ip", 10, 60),
            "{path}"
        );
    }
    let login = ex.route_for("/api/auth/login");
    assert!(login.get("lockout").is_some());
    assert_eq!(login["schema"].as_str(), Some("schemas/login.json"));
    assert_eq!(
        ex.route_for("/api/auth/register")["schema"].as_str(),
        Some("schemas/signup.json")
    );
    assert_strings_bounded("schemas/login.json");
    assert_strings_bounded("schemas/signup.json");
    // Headers: a CSP-bearing preset, includeSubDomains HSTS, X-XSS-Protection, cookies.
    for route in ex.routes() {
        let h = ex.headers(route);
        let what = route_name(route);
        assert!(
            ["web-app", "strict-api"].contains(&h["preset"].as_str().unwrap_or("baseline")),
            "{what}"
        );
        if let Some(hsts) = h.get("hsts").and_then(Value::as_str) {
            assert!(hsts.contains("includeSubDomains"), "{what}");
        }
        assert!(h["set"].get("X-XSS-Protection").is_some(), "{what}");
        assert_eq!(h["cookies"]["http_only"].as_bool(), Some(true), "{what}");
    }
    // CORS restricted to the production origins.
    for (name, cors) in ex.tables("cors") {
        let origins = str_list(cors.get("allow_origins"));
        assert!(!origins.is_empty(), "cors.{name}");
        assert!(origins
            .iter()
            .all(|o| o.starts_with("https://") && !o.contains('*')));
    }
    // Administration only from the VPN, with an admin key.
    let admin = ex.route_for("/api/admin/users");
    assert!(!str_list(admin.get("allow_ips")).is_empty());
    assert!(str_list(admin["auth"].get("roles")).contains(&"admin"));
    // Two API replicas behind health checks and a breaker, with timeouts.
    let api = ex.table("upstreams", route_name_upstream(&ex, "/api/users"));
    assert!(api["servers"].as_array().expect("servers").len() >= 2);
    assert!(api.get("health_check").is_some() && api.get("passive_health").is_some());
    assert!(api.get("read_timeout").is_some() && api.get("connect_timeout").is_some());
    // Uploads: multipart only, bounded.
    let uploads = ex.route_for("/api/files");
    assert_eq!(
        str_list(uploads.get("content_types")),
        ["multipart/form-data"]
    );
    assert!(ex.max_body(uploads) <= 16 << 20);
}

fn route_name_upstream<'a>(ex: &'a Example, path: &str) -> &'a str {
    ex.route_for(path)["upstream"].as_str().expect("upstream")
}

#[test]
fn rust_chat_api_example_enforces_json_and_caps_streams() {
    let ex = Example::load("rust-chat-api");
    // HSTS one year, subdomains, preload; the rest of the headers from strict-api.
    for route in ex.routes() {
        let h = ex.headers(route);
        assert_eq!(h["preset"].as_str(), Some("strict-api"));
        assert_eq!(
            h["hsts"].as_str(),
            Some("max-age=31536000; includeSubDomains; preload")
        );
    }
    // Every route that takes a body takes JSON only, and early: bounded.
    for route in ex.routes() {
        let methods = str_list(route.get("methods"));
        assert!(!methods.is_empty(), "{}: any method", route_name(route));
        if methods.iter().any(|m| ["POST", "PUT", "PATCH"].contains(m)) {
            assert_eq!(
                str_list(route.get("content_types")),
                ["application/json"],
                "{}",
                route_name(route)
            );
        }
        assert!(ex.max_body(route) <= 1 << 20, "{}", route_name(route));
    }
    // Concurrent event streams per client are capped.
    let stream = ex.route_for("/api/stream/42");
    let cap = stream["max_in_flight"].as_integer().expect("max_in_flight");
    assert!((1..=10).contains(&cap));
    // Login and signup: per-IP throttling and an exponential backoff each.
    for path in ["/auth/login", "/auth/signup"] {
        let r = ex.route_for(path);
        assert!(
            ex.limits(r)
                .iter()
                .any(|l| l["key"].as_str() == Some("client_ip")),
            "{path}"
        );
        let lockout = ex.table("lockouts", r["lockout"].as_str().expect("lockout"));
        let block = seconds(lockout["block"].as_str().unwrap_or("1m"));
        let max_block = seconds(lockout["max_block"].as_str().unwrap_or("1h"));
        assert!(max_block > block, "{path}: the block never grows");
    }
    // Auth endpoints are tighter than the rest; per-user limits after auth.
    let tight = |path: &str| {
        ex.limits(ex.route_for(path))
            .iter()
            .filter(|l| l["key"].as_str() == Some("client_ip"))
            .filter_map(|l| l["limit"].as_integer())
            .min()
            .unwrap_or(i64::MAX)
    };
    assert!(tight("/auth/login") < tight("/api/conversations"));
    assert!(ex
        .limits(ex.route_for("/api/conversations"))
        .iter()
        .any(|l| l["key"].as_str() == Some("header:Authorization")));
    // The app's own metrics are not public.
    assert!(!str_list(ex.route_for("/metrics").get("allow_ips")).is_empty());
}

// ---------------------------------------------------------------------------------------------
// The Flask API example, running.

const KEY: &str = "flask-current-key-0123456789";
const NEXT: &str = "flask-next-key-0123456789abc";

/// The Flask API example on free loopback ports, in front of `app`, with `KEY` in API_KEYS and
/// `NEXT` in API_KEYS_NEXT.
async fn start_flask_api(app: &Upstream) -> Gateway {
    let ex = Example::load("flask-api");
    let work = Workdir::new();
    let pair = work.cert("main", &["localhost", "127.0.0.1"]);
    for file in ["dev.pem", "dev-key.pem"] {
        std::fs::copy(pair.join(file), work.path().join("certs").join(file)).expect("copy");
    }
    std::fs::create_dir_all(work.path().join("schemas")).expect("mkdir");
    std::fs::copy(
        examples_dir().join("schemas/job.json"),
        work.path().join("schemas/job.json"),
    )
    .expect("copy schema");
    let mut template = ex.text.clone();
    let upstream = format!("\"{}\"", app.addr);
    for (from, to) in [
        (
            "tls_listen = [\"0.0.0.0:443\"]",
            "tls_listen = [\"127.0.0.1:{HTTPS}\"]",
        ),
        (
            "listen = [\"0.0.0.0:80\"]",
            "listen = [\"127.0.0.1:{HTTP}\"]",
        ),
        (
            "listen = \"127.0.0.1:9901\"",
            "listen = \"127.0.0.1:{ADMIN}\"",
        ),
        ("\"127.0.0.1:5000\"", upstream.as_str()),
    ] {
        assert!(template.contains(from), "flask-api no longer has {from}");
        template = template.replace(from, to);
    }
    Gateway::start_in(
        work,
        &template,
        &[("API_KEYS", KEY), ("API_KEYS_NEXT", NEXT)],
    )
    .await
}

/// A valid job of exactly `size` bytes of JSON.
fn job_of(size: usize) -> Vec<u8> {
    let shell = json!({"workflow": "render", "callback_url": "https://cb.example.com/done", "payload": {"pad": ""}}).to_string();
    let body = shell.replace(
        "\"pad\":\"\"",
        &format!("\"pad\":\"{}\"", "x".repeat(size - shell.len())),
    );
    assert_eq!(body.len(), size);
    body.into_bytes()
}

async fn post_job(
    gw: &Gateway,
    key: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Result<reqwest::Response> {
    let mut req = gw
        .client()
        .post(gw.https_url("/api/jobs"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    req.send().await
}

/// The checklist's exact header values, on the app's answers and the gateway's own.
fn assert_exact_headers(r: &reqwest::Response, what: &str) {
    for (name, value) in [
        (
            "strict-transport-security",
            "max-age=31536000; includeSubDomains; preload",
        ),
        (
            "content-security-policy",
            "default-src 'none'; frame-ancestors 'none'",
        ),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-embedder-policy", "require-corp"),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
    ] {
        assert_eq!(
            r.headers().get(name).and_then(|v| v.to_str().ok()),
            Some(value),
            "{what}: {name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flask_api_example_answers_as_its_go_no_go_list_says() {
    let app = Upstream::start("flask").await;
    let gw = start_flask_api(&app).await;
    let client = gw.client();

    // Plain HTTP goes to HTTPS.
    let r = client.get(gw.http_url("/")).send().await.unwrap();
    assert_eq!(r.status(), 308);

    let r = client.get(gw.https_url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_exact_headers(&r, "GET /");
    let r = client
        .get(gw.https_url("/.well-known/security.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Contact:"));

    // Jobs need a key from API_KEYS or API_KEYS_NEXT, and the app never sees it.
    let r = post_job(&gw, None, job_of(200)).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_exact_headers(&r, "the gateway's 401");
    for key in [KEY, NEXT] {
        let r = post_job(&gw, Some(key), job_of(200)).await.unwrap();
        assert_eq!(r.status(), 200, "a key of either set");
        let seen: Json = r.json().await.unwrap();
        assert_eq!(seen["path"], "/api/jobs");
        assert!(
            seen["headers"].get("x-api-key").is_none(),
            "the key reached the app"
        );
    }

    // Field checks: an ftp:// callback URL is refused.
    let ftp = json!({"workflow": "render", "callback_url": "ftp://files.example.com/x"});
    let r = post_job(&gw, Some(KEY), ftp.to_string().into_bytes())
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Json = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["pointer"], "/callback_url");

    // 200KB is 200,000 bytes: one byte more is refused on its Content-Length, before the app.
    // (The refused ftp job's head did reach the app, which counts it when it reads it: let
    // that land before counting.)
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let hits = app.hits();
    if let Ok(r) = post_job(&gw, Some(KEY), job_of(200_001)).await {
        // The client may also see the stream cut before it reads the answer.
        assert_eq!(r.status(), 413, "a job over 200KB");
        assert_exact_headers(&r, "the gateway's 413");
    }
    assert_eq!(app.hits(), hits, "the app saw a job over 200KB");

    // 20/min per IP: a 429 with Retry-After and the X-RateLimit fields (limit: the burst, 20).
    let mut refused = None;
    for _ in 0..25 {
        let r = client.get(gw.https_url("/")).send().await.unwrap();
        if r.status() == 429 {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status(), 200);
    }
    let r = refused.expect("no 429 within 25 requests at 20/min");
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("the 429 has no {name}"))
            .to_string()
    };
    let retry: u64 = header("retry-after").parse().expect("Retry-After seconds");
    assert!((1..=60).contains(&retry), "Retry-After: {retry}");
    assert_eq!(header("x-ratelimit-limit"), "20");
    assert_eq!(header("x-ratelimit-remaining"), "0");
    assert!(header("x-ratelimit-reset").parse::<u64>().is_ok());
    assert!(header("ratelimit-policy").contains("\"per_ip\";q=20;w=60"));
    assert_exact_headers(&r, "the gateway's 429");
}

/// A job of up to 200KB arrives in several reads and is held back whole for its schema: each
/// chunk held must leave an empty chunk, not `None`, which Pingora reads as the end of the body
/// (the app then got the head and nothing more, and the request hung).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flask_api_example_forwards_a_job_of_exactly_200kb() {
    let app = Upstream::start("flask").await;
    let gw = start_flask_api(&app).await;
    for size in [20_000, 200_000] {
        let r = post_job(&gw, Some(KEY), job_of(size)).await.unwrap();
        assert_eq!(r.status(), 200, "a job of {size} bytes");
        let seen: Json = r.json().await.unwrap();
        assert_eq!(seen["body_len"], size);
    }
}
