//! `palisade check` and `palisade run` on bad configs: every error class, located, all at once.

use std::process::Command;
use std::time::Duration;

use crate::harness::{check, free_port, Workdir, BIN};

const UPSTREAM: &str = "[upstreams.app]\nservers = [\"127.0.0.1:9\"]\n";

fn check_text(text: &str) -> (i32, String, String) {
    let work = Workdir::new();
    let path = work.write("gateway.toml", text);
    let (code, out, err) = check(&path);
    // Paths in messages are the file as given: make them comparable.
    let err = err.replace(&path.display().to_string(), "gateway.toml");
    (code, out, err)
}

#[test]
fn an_unknown_key_is_named_with_file_line_and_column() {
    let (code, _, err) = check_text(&format!(
        "{UPSTREAM}\n[server]\nlisten = [\"127.0.0.1:8080\"]\nmax_bodyy = \"1MiB\"\n"
    ));
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("gateway.toml:6:1: server.max_bodyy: unknown field `max_bodyy`"),
        "{err}"
    );
}

#[test]
fn every_error_is_listed_not_just_the_first() {
    let text = r#"
[server]
listen = ["not an address"]

[upstreams.app]
servers = ["127.0.0.1:9"]
connect_timeout = "2 fortnights"

[[routes]]
name = "one"
upstream = "nope"

[[routes]]
name = "one"
path = "/x"
upstream = "app"
"#;
    let (code, _, err) = check_text(text);
    assert_eq!(code, 78);
    // The unit error stops upstreams.app; the rest are found on the same run.
    assert!(
        err.contains("gateway.toml:7:1: upstreams.app.connect_timeout: unknown duration unit"),
        "{err}"
    );
    let work_around = check_text(&text.replace("2 fortnights", "2s")).2;
    assert!(
        work_around
            .contains("gateway.toml:3:11: server.listen[0]: `not an address` is not an address"),
        "{work_around}"
    );
    assert!(
        work_around.contains(
            "gateway.toml:11:1: routes[0].upstream: unknown upstream `nope`; defined: app"
        ),
        "{work_around}"
    );
    assert!(
        work_around.contains("gateway.toml:14:1: routes[1].name: route name `one` is used twice"),
        "{work_around}"
    );
    assert!(work_around.contains("3 error(s)"), "{work_around}");
}

#[test]
fn a_syntax_error_points_at_the_line() {
    let (code, _, err) = check_text("[server]\nlisten = [\"127.0.0.1:1\"\n[admin]\n");
    assert_eq!(code, 78);
    assert!(
        err.lines()
            .next()
            .unwrap_or_default()
            .starts_with("gateway.toml:3:"),
        "{err}"
    );
}

#[test]
fn an_unknown_section_is_refused() {
    let (code, _, err) = check_text(&format!("{UPSTREAM}[rate_limit.per_ip]\nlimit = 5\n"));
    assert_eq!(code, 78);
    assert!(
        err.contains("gateway.toml:3:2: rate_limit: unknown section `rate_limit`"),
        "{err}"
    );
}

#[test]
fn https_without_a_certificate_and_a_redirect_without_https_are_refused() {
    let (code, _, err) = check_text(&format!(
        "{UPSTREAM}[server]\ntls_listen = [\"127.0.0.1:8443\"]\n"
    ));
    assert_eq!(code, 78);
    assert!(
        err.contains("server.tls_listen: HTTPS listeners need a [tls] section"),
        "{err}"
    );

    let (code, _, err) = check_text(&format!("{UPSTREAM}[server]\nredirect_https = true\n"));
    assert_eq!(code, 78);
    assert!(
        err.contains("gateway.toml:4:1: server.redirect_https: needs an HTTPS listener"),
        "{err}"
    );
}

#[test]
fn a_missing_secret_is_named() {
    let work = Workdir::new();
    work.cert("main", &["localhost"]);
    let text = format!(
        "{UPSTREAM}[server]\ntls_listen = [\"127.0.0.1:8443\"]\n[tls]\n[[tls.certificates]]\ncert = \"certs/main/dev.pem\"\nkey = {{ env = \"PALISADE_TEST_NO_SUCH_KEY\" }}\n"
    );
    let path = work.write("gateway.toml", &text);
    let (code, _, err) = check(&path);
    assert_eq!(code, 78);
    assert!(err.contains(":8:1: tls.certificates[0].key: environment variable `PALISADE_TEST_NO_SUCH_KEY` is not set"), "{err}");

    // The same reference, set, loads.
    let out = Command::new(BIN)
        .arg("check")
        .arg(&path)
        .env(
            "PALISADE_TEST_NO_SUCH_KEY",
            std::fs::read_to_string(work.path().join("certs/main/dev-key.pem")).unwrap(),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_key_that_does_not_fit_its_certificate_is_refused() {
    let work = Workdir::new();
    work.cert("a", &["a.test"]);
    work.cert("b", &["b.test"]);
    let text = format!(
        "{UPSTREAM}[server]\ntls_listen = [\"127.0.0.1:8443\"]\n[tls]\n[[tls.certificates]]\ncert = \"certs/a/dev.pem\"\nkey = {{ file = \"certs/b/dev-key.pem\" }}\n"
    );
    let (code, _, err) = check(&work.write("gateway.toml", &text));
    assert_eq!(code, 78);
    assert!(
        err.contains("tls.certificates[0].key: does not fit the certificate"),
        "{err}"
    );
}

#[test]
fn routes_with_bad_hosts_paths_methods_or_names_are_refused() {
    let text = format!(
        "{UPSTREAM}[[routes]]\nname = \"bad name\"\nhost = \"a.*.example.com\"\npath = \"api\"\nmethods = [\"get\"]\nupstream = \"app\"\n"
    );
    let (code, _, err) = check_text(&text);
    assert_eq!(code, 78);
    assert!(err.contains(":4:1: routes[0].name:"), "{err}");
    assert!(
        err.contains(":5:1: routes[0].host: `a.*.example.com` is not a host name"),
        "{err}"
    );
    assert!(
        err.contains(":6:1: routes[0].path: `api` must start with `/`"),
        "{err}"
    );
    assert!(
        err.contains(":7:12: routes[0].methods[0]: `get` is not a method name"),
        "{err}"
    );
}

/// An upstream's name is a metrics label and names its pool in `/readyz`, as a route's name
/// is, and is held to the same rule; one with a dot would make its keys' paths ambiguous.
#[test]
fn an_upstream_name_that_is_not_a_label_is_refused() {
    for name in ["\"my app\"", "\"api.v1\"", "\"\""] {
        let text =
            format!("[upstreams.{name}]\nservers = [\"127.0.0.1:9\"]\n[[routes]]\nname = \"r\"\nupstream = {name}\n");
        let (code, _, err) = check_text(&text);
        assert_eq!(code, 78, "{name}: {err}");
        let bare = name.trim_matches('"');
        assert!(
            err.contains(&format!(
                "gateway.toml:1:12: upstreams.{name}: upstream name `{bare}` must be 1-64 letters, digits, `_` or `-`"
            )),
            "{name}: {err}"
        );
    }
    // The same rule's accepted names stay accepted.
    let text = "[upstreams.legacy_app-2]\nservers = [\"127.0.0.1:9\"]\n[[routes]]\nname = \"r\"\nupstream = \"legacy_app-2\"\n";
    let (code, _, err) = check_text(text);
    assert_eq!(code, 0, "{err}");
}
#[test]
fn two_routes_on_the_same_host_and_path_are_refused() {
    let text = format!("{UPSTREAM}[[routes]]\nname = \"a\"\npath = \"/api/\"\nupstream = \"app\"\n[[routes]]\nname = \"b\"\npath = \"/api\"\nupstream = \"app\"\n");
    let (code, _, err) = check_text(&text);
    assert_eq!(code, 78);
    assert!(
        err.contains("routes[1].path: routes `a` and `b` match the same host and path"),
        "{err}"
    );
}

#[test]
fn a_valid_config_passes_with_a_summary() {
    let text = format!("{UPSTREAM}[[routes]]\nname = \"all\"\nupstream = \"app\"\n");
    let (code, out, err) = check_text(&text);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(": ok: 1 route(s), 1 upstream(s), 1 listener(s)"),
        "{out}"
    );
}

#[test]
fn the_shipped_gateway_toml_is_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = Workdir::new();
    work.cert("main", &["localhost"]);
    let text = std::fs::read_to_string(root.join("gateway.toml")).expect("gateway.toml");
    // Its certificate paths are relative to the repo; point them at a generated pair.
    let text = text
        .replace("certs/dev.pem", "certs/main/dev.pem")
        .replace("certs/dev-key.pem", "certs/main/dev-key.pem");
    let path = work.write("gateway.toml", &text);
    let out = Command::new(BIN)
        .arg("check")
        .arg(&path)
        .env("API_KEYS", "pk_demo_0123456789abcdefghij")
        .env("API_KEYS_NEXT", "")
        .output()
        .unwrap();
    let (stdout, err) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(stdout.contains("ok"), "{stdout}");
    // Without its key variable it does not start, and says which one.
    let (code, _, err) = check(&path);
    if std::env::var_os("API_KEYS").is_none() {
        assert_eq!(code, 78, "{err}");
        assert!(err.contains("API_KEYS"), "{err}");
    }
}

#[test]
fn the_legacy_app_example_is_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = Workdir::new();
    let main = work.cert("main", &["example.com"]);
    let internal = work.cert("internal", &["*.internal.example.com"]);
    std::fs::copy(
        internal.join("dev.pem"),
        work.path().join("internal-ca.pem"),
    )
    .unwrap();
    let text = std::fs::read_to_string(root.join("examples/legacy-app.toml")).expect("example");
    let text = text
        .replace(
            "/etc/palisade/tls/example.com.pem",
            &main.join("dev.pem").display().to_string(),
        )
        .replace(
            "/etc/palisade/tls/example.com-key.pem",
            &main.join("dev-key.pem").display().to_string(),
        )
        .replace(
            "/etc/palisade/tls/internal.pem",
            &internal.join("dev.pem").display().to_string(),
        )
        .replace("/etc/palisade/tls/internal-ca.pem", "internal-ca.pem");
    let key = std::fs::read_to_string(internal.join("dev-key.pem")).unwrap();
    let out = Command::new(BIN)
        .arg("check")
        .arg(work.write("legacy.toml", &text))
        .env("INTERNAL_TLS_KEY", key)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("ok: 3 route(s), 2 upstream(s), 2 listener(s)"));
}

#[test]
fn run_with_an_invalid_config_exits_78_and_binds_nothing() {
    let work = Workdir::new();
    let port = free_port();
    let text = format!("[server]\nlisten = [\"127.0.0.1:{port}\"]\n{UPSTREAM}[[routes]]\nname = \"r\"\nupstream = \"missing\"\n");
    let path = work.write("gateway.toml", &text);
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "palisade kept running with an invalid config"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(78));
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("routes[0].upstream: unknown upstream `missing`"),
        "{err}"
    );
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "the port was bound"
    );
}

#[test]
fn audit_grades_a_weak_config_and_fails_it() {
    let work = Workdir::new();
    let text = "[server]\nlisten = [\"0.0.0.0:8080\"]\ninstances = 3\n\n[rate_limits.per_ip]\nkey = \"client_ip\"\nlimit = 10\nper = \"1m\"\n\n[admin]\nlisten = \"0.0.0.0:9901\"\n\n[defaults]\nheaders = \"baseline\"\n\n[headers.loose]\npreset = \"baseline\"\nhsts = \"max-age=600\"\nmask_errors = false\n\n[cors.any]\nallow_origins = [\"*\"]\n\n[upstreams.app]\nservers = [\"127.0.0.1:9\"]\n\n[[routes]]\nname = \"login\"\npath = \"/api/login\"\nheaders = \"loose\"\nupstream = \"app\"\n\n[api_keys.partners]\ncurrent = \"pk_inline_0123456789abcdef\"\n\n[[routes]]\nname = \"partners\"\npath = \"/v1\"\nheaders = \"loose\"\nupstream = \"app\"\nauth = { api_keys = \"partners\" }\n";
    let path = work.write("weak.toml", text);
    let out = Command::new(BIN).arg("audit").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "a FAIL exits 1");
    let report = String::from_utf8_lossy(&out.stdout);
    for line in [
        "FAIL  https ",
        "FAIL  redirect_https ",
        "FAIL  admin ",
        "WARN  hsts            route `login`: HSTS max-age=600 is under six months",
        "FAIL  csp             route `login` sends no Content-Security-Policy",
        "WARN  mask_errors ",
        "FAIL  login_limits    route `login` looks like a credential endpoint",
        "WARN  global_limit ",
        "WARN  cors            [cors.any] allows any origin",
        "FAIL  login_limits    route `partners` checks API keys and has no rate limit",
        "FAIL  shared_limits   [server] instances = 3, but rate limits per_ip are kept per instance",
        "FAIL  secrets         a secret (TLS key, Redis URL, API keys or webhook secret) is written inline",
    ] {
        assert!(report.contains(line), "missing `{line}` in:\n{report}");
    }

    let out = Command::new(BIN)
        .args(["audit", "--format", "json"])
        .arg(&path)
        .output()
        .unwrap();
    let findings: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let fails = findings
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["grade"] == "FAIL")
        .count();
    assert!(fails >= 5, "{findings}");
    assert!(findings[0]["fix"].is_string());
}

#[test]
fn audit_passes_the_shipped_gateway_toml() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = Workdir::new();
    work.cert("main", &["localhost"]);
    let text = std::fs::read_to_string(root.join("gateway.toml")).unwrap();
    let text = text
        .replace("certs/dev.pem", "certs/main/dev.pem")
        .replace("certs/dev-key.pem", "certs/main/dev-key.pem");
    let out = Command::new(BIN)
        .arg("audit")
        .arg(work.write("gateway.toml", &text))
        .env("API_KEYS", "pk_demo_0123456789abcdefghij")
        .env("API_KEYS_NEXT", "")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(
        !report.contains("FAIL") && !report.contains("WARN"),
        "{report}"
    );
}

#[test]
fn a_header_deadline_under_a_second_and_zero_instances_or_keepalive_are_refused() {
    let (code, _, err) = check_text(&format!(
        "{UPSTREAM}\n[server]\nlisten = [\"127.0.0.1:8080\"]\ninstances = 0\nupstream_keepalive = 0\ntimeouts = {{ header_read = \"0s\" }}\n"
    ));
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("server.timeouts.header_read: must be at least 1s"),
        "{err}"
    );
    assert!(
        err.contains("server.instances: must be at least 1"),
        "{err}"
    );
    assert!(
        err.contains("server.upstream_keepalive: must be at least 1"),
        "{err}"
    );
    let (code, _, err) = check_text(&format!(
        "{UPSTREAM}\n[server]\nlisten = [\"127.0.0.1:8080\"]\nupstream_keepalive = 100000000\n"
    ));
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("gateway.toml:6:1: server.upstream_keepalive: must be at most 65536"),
        "{err}"
    );
}

#[test]
fn a_rate_limit_name_that_cannot_be_sent_in_its_headers_is_refused() {
    // The name goes out quoted in `RateLimit` and `RateLimit-Policy`: a quote would end the
    // string early, a control character would make the header invalid.
    for name in [r#""per\"ip""#, r#""per\u0001ip""#] {
        let text = format!(
            "{UPSTREAM}\n[rate_limits.{name}]\nkey = \"client_ip\"\nlimit = 10\nper = \"1s\"\n"
        );
        let (code, _, err) = check_text(&text);
        assert_eq!(code, 78, "{name}: {err}");
        assert!(
            err.contains("must be printable ASCII without"),
            "{name}: {err}"
        );
    }
    let ok = format!(
        "{UPSTREAM}\n[rate_limits.\"per ip.v2\"]\nkey = \"client_ip\"\nlimit = 10\nper = \"1s\"\n"
    );
    let (code, _, err) = check_text(&ok);
    assert_eq!(code, 0, "{err}");
}
