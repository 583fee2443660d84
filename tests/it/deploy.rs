//! The deploy kit: `deploy/` (systemd, compose, Kubernetes, Prometheus, Grafana), `Dockerfile`
//! and `.dockerignore`. Each file goes through the tool that owns its format where one is
//! installed: promtool (required; `make test` installs it), systemd-analyze, hadolint,
//! kubernetes-validate, check-jsonschema and kubectl (each skipped with a note when absent);
//! everything is parsed, and held to what matters in it: probes on the admin routes, a non-root
//! user, secrets by reference only, configs that `palisade check` accepts, and metric names and
//! labels that src/metrics.rs really registers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;
use serde_json::{json, Value as Json};
use serde_yaml::Value as Yaml;

use crate::harness::{Gateway, Upstream, Workdir, BIN, DEAD, TLS_BASICS};

mod compose;
mod configs;
mod docker;
mod grafana;
mod kubernetes;
mod prometheus;
mod promql;
mod systemd;

use compose::service_mounts;
use configs::{
    admin_port, assert_shared_limits, env_references, kubernetes_gateway_toml, listen_ports,
};
use docker::{dockerfile_stages, dockerfile_user};
use promql::{known_metrics, name_problems, registered_metrics, scan_promql};

// ---------------------------------------------------------------------------------------------
// Files and tools.

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml(rel: &str) -> Yaml {
    serde_yaml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not YAML: {e}"))
}

/// Every document of a multi-document YAML file.
fn yaml_docs(rel: &str) -> Vec<Yaml> {
    let text = read(rel);
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Yaml::deserialize(doc).unwrap_or_else(|e| panic!("{rel} is not YAML: {e}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn str_of<'a>(v: &'a Yaml, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v:?}"))
}

fn seq<'a>(v: &'a Yaml, what: &str) -> &'a Vec<Yaml> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("{what} is not a list: {v:?}"))
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// promtool is required, never skipped: `make test` installs Debian's `prometheus` package.
fn promtool(args: &[&str], dir: &Path) -> Output {
    Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool is not installed: `make test` (scripts/deps.sh test) installs it")
}

/// Whether an optional validator is on PATH (`probe`: arguments it answers, like `--version`);
/// says so when it is not.
fn installed(program: &str, probe: &[&str]) -> bool {
    let found = Command::new(program)
        .args(probe)
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIPPED: {program} is not installed; that validation did not run");
    }
    found
}

fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed:\n{}", output_text(out));
}
