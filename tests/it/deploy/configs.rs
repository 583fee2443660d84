//! The gateway configs under deploy/: `palisade check` and `palisade audit` on each, with the
//! files and variables they name.

use super::*;

/// Dummy values for the `{ env = "NAME" }` references deploy configs may make.
const ENV_FOR_CHECK: [(&str, &str); 1] = [("REDIS_URL", "redis://127.0.0.1:6379")];

pub(super) fn env_references(value: &toml::Value, out: &mut Vec<String>) {
    match value {
        toml::Value::Table(t) => {
            if let (1, Some(toml::Value::String(name))) = (t.len(), t.get("env")) {
                out.push(name.clone());
            }
            t.values().for_each(|v| env_references(v, out));
        }
        toml::Value::Array(a) => a.iter().for_each(|v| env_references(v, out)),
        _ => {}
    }
}

/// A deploy config in a scratch folder with what it names: development certificates where
/// `[[tls.certificates]]` points, and `rewrites` applied (host names that resolve only inside
/// compose or Kubernetes; the gateway resolves upstreams when it loads a config).
fn stage_config(text: &str, rewrites: &[(&str, &str)]) -> (Workdir, PathBuf, toml::Value) {
    let config: toml::Value = toml::from_str(text).expect("a TOML config");
    let mut staged = text.to_string();
    for (from, to) in rewrites {
        assert!(staged.contains(from), "the config no longer names {from}");
        staged = staged.replace(from, to);
    }
    let work = Workdir::new();
    let file = work.write("gateway.toml", &staged);
    let certs = config["tls"]["certificates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (n, c) in certs.iter().enumerate() {
        let cert = c["cert"].as_str().expect("tls.certificates.cert");
        let key = c["key"]
            .get("file")
            .and_then(toml::Value::as_str)
            .expect("the TLS key must be a { file = ... } reference, never inline");
        for path in [cert, key] {
            assert!(
                Path::new(path).is_relative(),
                "{path}: name TLS files relative to the config, so the config moves with them"
            );
        }
        let generated = work.cert(&format!("generated-{n}"), &["localhost"]);
        for (from, to) in [("dev.pem", cert), ("dev-key.pem", key)] {
            let to = work.path().join(to);
            std::fs::create_dir_all(to.parent().expect("a folder")).expect("mkdir");
            std::fs::copy(generated.join(from), &to).expect("copy certificate");
        }
    }
    (work, file, config)
}

fn palisade(args: &[&str], file: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).arg(file).env_remove("REDIS_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run palisade")
}

/// Checks one deploy config; returns it parsed.
fn check_deploy_config(name: &str, text: &str, rewrites: &[(&str, &str)]) -> toml::Value {
    let (_work, file, config) = stage_config(text, rewrites);
    let mut names = Vec::new();
    env_references(&config, &mut names);
    let mut env = Vec::new();
    for n in &names {
        let dummy = ENV_FOR_CHECK
            .iter()
            .find(|(k, _)| k == n)
            .unwrap_or_else(|| panic!("{name}: no test value for the environment variable {n}"));
        env.push(*dummy);
    }
    let out = palisade(&["check"], &file, &env);
    assert_ok(&out, &format!("palisade check {name}"));
    if let Some(first) = names.first() {
        // The check really reads the environment: without it, the config is refused by name.
        let out = palisade(&["check"], &file, &[]);
        assert_eq!(out.status.code(), Some(78), "{name}: {}", output_text(&out));
        assert!(
            output_text(&out).contains(first.as_str()),
            "{}",
            output_text(&out)
        );
    }
    // Every production checklist item passes, except an admin listener off loopback, which
    // compose and Kubernetes need for their scrapers and probes (their configs say why).
    let out = palisade(&["audit", "--format", "json"], &file, &env);
    let findings: Json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{name}: audit JSON: {e}\n{}", output_text(&out)));
    let failed: Vec<&Json> = findings
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["grade"] == "FAIL")
        .filter(|f| f["check"] != "admin")
        .collect();
    assert!(failed.is_empty(), "{name}: audit fails: {failed:#?}");
    config
}

/// The gateway.toml inside deploy/kubernetes/configmap.yaml.
pub(super) fn kubernetes_gateway_toml() -> String {
    let cm = yaml("deploy/kubernetes/configmap.yaml");
    assert_eq!(cm["kind"], "ConfigMap");
    str_of(&cm["data"]["gateway.toml"], "data.gateway.toml").to_string()
}

/// Every rate limit keeps its counters in Redis, reached through a secret reference: several
/// replicas enforce one limit, not one each.
pub(super) fn assert_shared_limits(name: &str, config: &toml::Value) {
    let limits = config["rate_limits"].as_table().expect("rate limits");
    assert!(!limits.is_empty());
    for (policy, limit) in limits {
        assert_eq!(
            limit.get("store").and_then(toml::Value::as_str),
            Some("redis"),
            "{name}: rate limit `{policy}` is kept per replica"
        );
    }
    assert_eq!(
        config["redis"]["url"]
            .get("env")
            .and_then(toml::Value::as_str),
        Some("REDIS_URL"),
        "{name}: the Redis URL (it can hold a password) must come from REDIS_URL"
    );
}

pub(super) fn admin_port(config: &toml::Value) -> u16 {
    let listen = config["admin"]["listen"].as_str().expect("admin.listen");
    listen
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("admin port")
}

pub(super) fn listen_ports(config: &toml::Value) -> BTreeSet<u16> {
    ["listen", "tls_listen"]
        .iter()
        .flat_map(|k| config["server"][*k].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a.as_str()?.rsplit(':').next()?.parse().ok())
        .collect()
}

#[test]
fn every_gateway_config_under_deploy_passes_palisade_check() {
    // A config added under deploy/ is checked, or this test says it is not.
    let mut found = Vec::new();
    let mut dirs = vec![repo().join("deploy")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("deploy/").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") {
                found.push(path.strip_prefix(repo()).expect("in repo").to_path_buf());
            }
        }
    }
    assert_eq!(
        found,
        [PathBuf::from("deploy/compose/gateway.toml")],
        "a new config under deploy/: add it to this test"
    );

    let compose = check_deploy_config(
        "deploy/compose/gateway.toml",
        &read("deploy/compose/gateway.toml"),
        &[("\"demo:3000\"", "\"127.0.0.1:3000\"")],
    );
    assert_shared_limits("compose", &compose);

    let kubernetes = check_deploy_config(
        "deploy/kubernetes/configmap.yaml",
        &kubernetes_gateway_toml(),
        &[("\"app:80\"", "\"127.0.0.1:80\"")],
    );
    assert_shared_limits("kubernetes", &kubernetes);
}
