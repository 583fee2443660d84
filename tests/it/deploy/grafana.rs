//! deploy/grafana: the dashboard (JSON, PromQL checked by promtool, names by src/metrics.rs)
//! and its provisioning.

use super::*;

fn dashboard() -> Json {
    serde_json::from_str(&read("deploy/grafana/palisade.json"))
        .unwrap_or_else(|e| panic!("deploy/grafana/palisade.json is not JSON: {e}"))
}

fn panels(dashboard: &Json) -> Vec<Json> {
    fn walk(list: &Json, out: &mut Vec<Json>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p.clone());
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// (panel title, refId, expr) of every query.
fn dashboard_queries(dashboard: &Json) -> Vec<(String, String, String)> {
    panels(dashboard)
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            p["targets"].as_array().into_iter().flatten().map(move |t| {
                (
                    title.clone(),
                    t["refId"].as_str().unwrap_or("?").to_string(),
                    t["expr"].as_str().unwrap_or("").to_string(),
                )
            })
        })
        .collect()
}

#[test]
fn dashboard_queries_are_valid_promql_over_exported_metrics() {
    let dash = dashboard();
    let known = known_metrics(&[]);
    let queries = dashboard_queries(&dash);
    assert!(queries.len() >= 15, "{} queries", queries.len());
    let variables: Vec<&Json> = dash["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .collect();
    let mut problems = Vec::new();
    for (title, _, expr) in &queries {
        for p in name_problems(expr, &known) {
            problems.push(format!("panel `{title}`: {p}"));
        }
    }
    // Template variables: label_values(SELECTOR, LABEL).
    for v in variables.iter().filter(|v| v["type"] == "query") {
        let query = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or("");
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable query `{query}`"));
        let (selector, label) = inner
            .rsplit_once(',')
            .expect("label_values(SELECTOR, LABEL)");
        let probe = format!("sum by ({}) ({selector})", label.trim());
        for p in name_problems(&probe, &known) {
            problems.push(format!("variable `{}`: {p}", v["name"]));
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");

    // PromQL syntax by promtool: each query as a recording rule, Grafana's variables filled in.
    let mut fill: Vec<(String, String)> = vec![
        ("$__rate_interval".into(), "5m".into()),
        ("$__interval".into(), "1m".into()),
        ("$__range".into(), "1h".into()),
    ];
    for v in &variables {
        if v["type"] == "query" {
            fill.push((
                format!("${}", v["name"].as_str().unwrap_or("")),
                ".+".into(),
            ));
        }
    }
    let mut rules = Vec::new();
    for (n, (title, _, expr)) in queries.iter().enumerate() {
        let mut filled = expr.clone();
        for (from, to) in &fill {
            filled = filled.replace(from.as_str(), to);
        }
        assert!(
            !filled.contains('$'),
            "panel `{title}` uses a variable the dashboard does not define: {expr}"
        );
        rules.push(json!({"record": format!("dashboard:query_{n}"), "expr": filled}));
    }
    let work = Workdir::new();
    let file = work.write(
        "dashboard_rules.yml",
        &serde_yaml::to_string(&json!({"groups": [{"name": "dashboard", "rules": rules}]}))
            .expect("rules YAML"),
    );
    let out = promtool(
        &["check", "rules", file.to_str().expect("utf-8 path")],
        work.path(),
    );
    assert_ok(&out, "promtool check rules on the dashboard's queries");

    let exported = registered_metrics();
    let shown: BTreeSet<String> = queries
        .iter()
        .flat_map(|(_, _, e)| scan_promql(e).selectors.into_iter().map(|(m, _)| m))
        .collect();
    let hidden: Vec<_> = exported
        .keys()
        .filter(|m| !shown.contains(*m) && !m.ends_with("_sum") && !m.ends_with("_count"))
        .collect();
    if !hidden.is_empty() {
        eprintln!("note: metrics on no dashboard panel: {hidden:?}");
    }
}

#[test]
fn dashboard_shows_each_concern_and_lays_out_on_the_grid() {
    let dash = dashboard();
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));
    let all = panels(&dash);
    let mut ids = BTreeSet::new();
    for p in &all {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "two panels share id {}",
            p["id"]
        );
        let (x, w) = (p["gridPos"]["x"].as_u64(), p["gridPos"]["w"].as_u64());
        assert!(
            matches!((x, w), (Some(x), Some(w)) if w > 0 && x + w <= 24),
            "panel `{title}` is off the 24-column grid: {}",
            p["gridPos"]
        );
        if p["type"] != "row" {
            let targets = p["targets"].as_array().map_or(0, Vec::len);
            assert!(targets > 0, "panel `{title}` has no query");
            // Queries go to the data source the dashboard's variable picks, so the dashboard
            // works in any Grafana, provisioned or imported.
            assert_eq!(p["datasource"]["uid"], "${datasource}", "panel `{title}`");
        }
    }
    let datasource = dash["templating"]["list"]
        .as_array()
        .and_then(|l| l.iter().find(|v| v["name"] == "datasource"))
        .expect("a `datasource` variable");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");

    let exprs: Vec<String> = dashboard_queries(&dash)
        .into_iter()
        .map(|(_, _, e)| e.split_whitespace().collect())
        .collect();
    let shown = |needles: &[&str]| exprs.iter().any(|e| needles.iter().all(|n| e.contains(n)));
    for (concern, needles) in [
        ("requests", &["rate(gateway_requests_total"][..]),
        (
            "latency p50",
            &[
                "histogram_quantile(0.5,",
                "gateway_request_duration_seconds_bucket",
            ],
        ),
        (
            "latency p95",
            &[
                "histogram_quantile(0.95,",
                "gateway_request_duration_seconds_bucket",
            ],
        ),
        (
            "latency p99",
            &[
                "histogram_quantile(0.99,",
                "gateway_request_duration_seconds_bucket",
            ],
        ),
        (
            "rejections by reason",
            &["by(reason)", "gateway_requests_rejected_total"],
        ),
        (
            "rate-limit decisions",
            &["gateway_rate_limit_decisions_total", "result"],
        ),
        ("upstream health", &["gateway_upstream_health"]),
        ("reloads", &["gateway_config_reloads_total"]),
        (
            "certificate expiry",
            &["gateway_tls_cert_expiry_timestamp_seconds", "time()"],
        ),
    ] {
        assert!(shown(needles), "no panel shows {concern} ({needles:?})");
    }
}

#[test]
fn grafana_provisioning_loads_the_dashboard_from_compose_prometheus() {
    let datasources = yaml("deploy/grafana/provisioning/datasources/prometheus.yml");
    let ds = &seq(&datasources["datasources"], "datasources")[0];
    assert_eq!(ds["type"], "prometheus");
    let compose = yaml("deploy/compose.yaml");
    let prometheus_port = seq(&compose["services"]["prometheus"]["ports"], "ports")
        .iter()
        .map(|p| {
            str_of(p, "port")
                .rsplit(':')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .next()
        .expect("prometheus port");
    assert_eq!(
        str_of(&ds["url"], "url"),
        format!("http://prometheus:{prometheus_port}"),
        "the data source must reach compose's `prometheus` service"
    );

    let dashboards = yaml("deploy/grafana/provisioning/dashboards/palisade.yml");
    let provider = &seq(&dashboards["providers"], "providers")[0];
    assert_eq!(provider["type"], "file");
    let folder = str_of(&provider["options"]["path"], "options.path");
    let mounted = service_mounts(&compose["services"]["grafana"]);
    assert!(
        mounted
            .iter()
            .any(|(src, dst)| src == "./grafana/palisade.json"
                && Path::new(dst).parent() == Some(Path::new(folder))),
        "compose must mount grafana/palisade.json into {folder}: {mounted:?}"
    );
    assert!(
        mounted
            .iter()
            .any(|(src, dst)| src == "./grafana/provisioning" && dst == "/etc/grafana/provisioning"),
        "{mounted:?}"
    );
}
