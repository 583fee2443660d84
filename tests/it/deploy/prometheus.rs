//! deploy/prometheus: the alert rules (promtool check and unit tests) and compose's config.

use super::*;

fn alert_rules() -> Vec<Yaml> {
    let rules = yaml("deploy/prometheus/alerts.yml");
    seq(&rules["groups"], "groups")
        .iter()
        .flat_map(|g| seq(&g["rules"], "rules").clone())
        .collect()
}

#[test]
fn alert_rules_pass_promtool_and_each_alert_fires_in_its_unit_test() {
    let dir = repo().join("deploy/prometheus");
    assert_ok(
        &promtool(&["check", "rules", "alerts.yml"], &dir),
        "promtool check rules",
    );
    // The config compose mounts: valid, and it loads the rule file beside it.
    let out = promtool(&["check", "config", "prometheus.yml"], &dir);
    assert_ok(&out, "promtool check config");
    assert!(
        output_text(&out).contains("1 rule files found"),
        "{}",
        output_text(&out)
    );
    let out = promtool(&["test", "rules", "alerts_test.yml"], &dir);
    assert_ok(&out, "promtool test rules");

    // Every alert is shown firing on synthetic series at least once: an alert that cannot fire
    // (a wrong label value, a typo in a metric name) fails here.
    let tests = yaml("deploy/prometheus/alerts_test.yml");
    let mut fired = BTreeSet::new();
    for case in seq(&tests["tests"], "tests") {
        for check in case["alert_rule_test"].as_sequence().into_iter().flatten() {
            if check["exp_alerts"]
                .as_sequence()
                .is_some_and(|a| !a.is_empty())
            {
                fired.insert(str_of(&check["alertname"], "alertname").to_string());
            }
        }
    }
    let alerts: BTreeSet<String> = alert_rules()
        .iter()
        .filter_map(|r| r["alert"].as_str().map(String::from))
        .collect();
    let untested: Vec<_> = alerts.difference(&fired).collect();
    assert!(
        untested.is_empty(),
        "alerts never shown firing in alerts_test.yml: {untested:?}"
    );
    for required in ["PalisadeHigh5xxRatio", "PalisadeConfigReloadFailed"] {
        assert!(fired.contains(required), "{required} is not tested");
    }
}

#[test]
fn alert_rules_cover_each_risk_with_metrics_the_gateway_exports() {
    let known = known_metrics(&["up"]);
    let rules = alert_rules();
    let mut problems = Vec::new();
    for rule in &rules {
        let name = rule["alert"].as_str().unwrap_or("(a recording rule)");
        let expr = str_of(&rule["expr"], name);
        for p in name_problems(expr, &known) {
            problems.push(format!("{name}: {p}"));
        }
        let severity = rule["labels"]["severity"].as_str().unwrap_or("");
        if !["warning", "critical"].contains(&severity) {
            problems.push(format!("{name}: severity `{severity}`"));
        }
        for key in ["summary", "description"] {
            if rule["annotations"][key].as_str().unwrap_or("").is_empty() {
                problems.push(format!("{name}: no {key}"));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");

    // One alert at least for each risk an operator must hear about.
    let exprs: Vec<String> = rules
        .iter()
        .map(|r| str_of(&r["expr"], "expr").split_whitespace().collect())
        .collect();
    let covered = |needles: &[&str]| exprs.iter().any(|e| needles.iter().all(|n| e.contains(n)));
    for (risk, needles) in [
        (
            "5xx ratio",
            &["gateway_requests_total{status_class=\"5xx\"}", "/"][..],
        ),
        (
            "p95 latency",
            &[
                "histogram_quantile(0.95",
                "gateway_request_duration_seconds_bucket",
            ],
        ),
        (
            "auth failures",
            &["gateway_api_key_auth_total{result!=\"ok\"}"],
        ),
        (
            "rate-limit rejections",
            &["gateway_rate_limit_decisions_total{result=\"limited\"}"],
        ),
        ("upstream down", &["gateway_upstream_health==0"]),
        (
            "certificate within 14 days",
            &["gateway_tls_cert_expiry_timestamp_seconds-time()<14*86400"],
        ),
        (
            "failed reloads",
            &["gateway_config_reloads_total{result=\"error\"}"],
        ),
    ] {
        assert!(
            covered(needles),
            "no alert for {risk} (looked for {needles:?})"
        );
    }
}
