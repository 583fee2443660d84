//! deploy/compose.yaml: the five services, wired to each other and to the files they mount.

use super::*;

/// `(source, target)` of each volume of a compose service (short syntax).
pub(super) fn service_mounts(service: &Yaml) -> Vec<(String, String)> {
    service["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|v| {
            let mut parts = str_of(v, "volume").split(':');
            (
                parts.next().unwrap_or("").to_string(),
                parts.next().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn compose_runs_gateway_redis_demo_prometheus_and_grafana_wired_together() {
    let compose = yaml("deploy/compose.yaml");
    let services = compose["services"].as_mapping().expect("services");
    for name in ["palisade", "redis", "demo", "prometheus", "grafana"] {
        assert!(
            services.contains_key(name),
            "compose.yaml has no `{name}` service"
        );
    }
    let deploy = repo().join("deploy");
    let stages = dockerfile_stages();
    for (name, service) in services {
        let name = str_of(name, "service name");
        // Built from this repository's Dockerfile, at a stage that exists.
        if !service["build"].is_null() {
            let context = deploy.join(str_of(&service["build"]["context"], "build.context"));
            assert!(
                context.join("Dockerfile").is_file(),
                "{name}: no Dockerfile in its context"
            );
            let target = str_of(&service["build"]["target"], "build.target");
            assert!(
                stages.iter().any(|s| s.name == target),
                "{name}: no stage `{target}`"
            );
        }
        // Bind mounts name files that exist.
        for (source, _) in service_mounts(service) {
            if source.starts_with('.') {
                assert!(deploy.join(&source).exists(), "{name}: {source} is missing");
            }
        }
        // Published ports stay on the host's loopback.
        for port in service["ports"].as_sequence().into_iter().flatten() {
            let port = str_of(port, "port");
            assert!(
                port.starts_with("127.0.0.1:"),
                "{name}: {port} is published on every interface"
            );
        }
        // No secret is written here: passwords and keys come from the environment.
        for (key, value) in service["environment"].as_mapping().into_iter().flatten() {
            let key = str_of(key, "variable");
            let secretish = ["PASSWORD", "SECRET", "TOKEN", "KEY", "REDIS_URL"]
                .iter()
                .any(|s| key.contains(s));
            let value = value.as_str().unwrap_or("");
            assert!(
                !secretish || value.starts_with("${"),
                "{name}: {key} is written in compose.yaml"
            );
        }
    }

    // The gateway: its config mounted where its command reads it, Redis in its environment,
    // and the demo backend where its upstream points.
    let gw = &compose["services"]["palisade"];
    let command: Vec<&str> = seq(&gw["command"], "command")
        .iter()
        .map(|a| str_of(a, "arg"))
        .collect();
    let config_path = command
        .windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1])
        .expect("--config");
    let mounts = service_mounts(gw);
    assert!(
        mounts
            .iter()
            .any(|(src, dst)| src == "./compose/gateway.toml" && dst == config_path),
        "compose/gateway.toml is not mounted at {config_path}: {mounts:?}"
    );
    let config: toml::Value = toml::from_str(&read("deploy/compose/gateway.toml")).expect("TOML");
    assert_shared_limits("compose", &config);
    let redis_url = str_of(&gw["environment"]["REDIS_URL"], "REDIS_URL");
    assert!(redis_url.contains("redis://redis:6379"), "{redis_url}");
    for needed in ["redis", "demo"] {
        assert!(
            !gw["depends_on"][needed].is_null(),
            "palisade must wait for {needed}"
        );
    }
    let upstream = config["upstreams"]["app"]["servers"][0]
        .as_str()
        .expect("upstream server");
    let demo_listen = str_of(&compose["services"]["demo"]["command"][0], "demo address");
    assert_eq!(
        upstream.rsplit(':').next(),
        demo_listen.rsplit(':').next(),
        "the gateway's upstream and the demo backend's port differ"
    );
    assert!(upstream.starts_with("demo:") && demo_listen.starts_with("0.0.0.0:"));
    let stop = gw["stop_grace_period"].as_str().expect("stop_grace_period");
    let shutdown = config["server"]["shutdown_grace"]
        .as_str()
        .expect("shutdown_grace");
    assert!(
        humantime::parse_duration(stop).expect("duration")
            > humantime::parse_duration(shutdown).expect("duration"),
        "docker would kill the gateway before its {shutdown} drain"
    );

    // Prometheus scrapes the gateway's admin listener by service name.
    let prometheus = yaml("deploy/prometheus/prometheus.yml");
    let target = str_of(
        &prometheus["scrape_configs"][0]["static_configs"][0]["targets"][0],
        "scrape target",
    );
    assert_eq!(target, format!("palisade:{}", admin_port(&config)));
    assert_eq!(prometheus["scrape_configs"][0]["job_name"], "palisade");
    let mounted = service_mounts(&compose["services"]["prometheus"]);
    for file in ["prometheus.yml", "alerts.yml"] {
        assert!(
            mounted
                .iter()
                .any(|(src, dst)| src == &format!("./prometheus/{file}")
                    && dst == &format!("/etc/prometheus/{file}")),
            "{file} is not mounted beside prometheus.yml: {mounted:?}"
        );
    }

    if installed("check-jsonschema", &["--version"]) {
        let out = Command::new("check-jsonschema")
            .args(["--builtin-schema", "vendor.compose-spec"])
            .arg(repo().join("deploy/compose.yaml"))
            .output()
            .expect("check-jsonschema");
        assert_ok(&out, "check-jsonschema (compose spec)");
    }
}
