//! The metrics src/metrics.rs registers, read from its text, and the metric and label names a
//! PromQL expression uses: what the alert rules and the dashboard may name.

use super::*;

/// Labels every scraped series gets from Prometheus itself.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// Every series name src/metrics.rs registers, with its labels: read from the source, so a
/// renamed metric or label breaks the rules and the dashboard here, not in production.
/// Histograms give `_bucket` (with `le`), `_sum` and `_count`.
pub(super) fn registered_metrics() -> BTreeMap<String, BTreeSet<String>> {
    let src = read("src/metrics.rs");
    let mut out = BTreeMap::new();
    let mut rest = src.as_str();
    while let Some(at) = rest.find("\"gateway_") {
        let statement = rest[..at].rfind("let ").map_or("", |s| &rest[s..at]);
        let after = &rest[at + 1..];
        let end = after.find('"').expect("a closing quote");
        let name = &after[..end];
        let constructor = &after[end..after[end..].find(")?;").map_or(after.len(), |e| end + e)];
        let labels: BTreeSet<String> = match constructor.find("&[") {
            Some(open) => {
                let list = &constructor[open + 2..];
                list[..list.find(']').expect("a closing bracket")]
                    .split(',')
                    .map(|l| l.trim().trim_matches('"'))
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect()
            }
            None => BTreeSet::new(),
        };
        if statement.contains("Histogram") {
            let mut with_le = labels.clone();
            with_le.insert("le".into());
            out.insert(format!("{name}_bucket"), with_le);
            out.insert(format!("{name}_sum"), labels.clone());
            out.insert(format!("{name}_count"), labels);
        } else {
            out.insert(name.to_string(), labels);
        }
        rest = &after[end..];
    }
    out
}

/// The registered metrics and `extra` (names Prometheus makes itself, like `up`).
pub(super) fn known_metrics(extra: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let mut known = registered_metrics();
    for name in extra {
        known.insert(name.to_string(), BTreeSet::new());
    }
    known
}

/// What a PromQL expression names: metric selectors with the labels they match on, and the
/// labels of `by`, `without`, `on`, `ignoring`, `group_left`, `group_right` and bare `{...}`.
#[derive(Debug, Default)]
pub(super) struct Names {
    pub(super) selectors: Vec<(String, Vec<String>)>,
    labels: Vec<String>,
}

const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Words that are never metric names: binary operators, modifiers, and the aggregations, which
/// may stand before their `by (...)` instead of their `(`.
const OPERATORS: [&str; 20] = [
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "atan2",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
];

pub(super) fn scan_promql(expr: &str) -> Names {
    let b = expr.as_bytes();
    let mut names = Names::default();
    let mut last_metric: Option<usize> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' || c == b'`' {
            i = skip_string(b, i);
            last_metric = None;
        } else if c == b'[' {
            i += b[i..]
                .iter()
                .position(|&x| x == b']')
                .unwrap_or(b.len() - i)
                + 1;
        } else if c == b'{' {
            let (labels, next) = matchers(expr, i);
            match last_metric {
                Some(k) => names.selectors[k].1.extend(labels),
                None => names.labels.extend(labels),
            }
            last_metric = None;
            i = next;
        } else if c.is_ascii_digit() || c == b'.' {
            // Numbers and durations (0.95, 1e3, 15m).
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
            last_metric = None;
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            let word = &expr[start..i];
            let next = b[i..].iter().position(|x| !x.is_ascii_whitespace());
            let call = next.is_some_and(|n| b[i + n] == b'(');
            last_metric = None;
            if GROUPING.contains(&word) && call {
                let open = i + next.unwrap_or(0);
                let close = open + b[open..].iter().position(|&x| x == b')').unwrap_or(0);
                names.labels.extend(
                    expr[open + 1..close]
                        .split(',')
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(String::from),
                );
                i = close + 1;
            } else if !call && !OPERATORS.contains(&word) && !GROUPING.contains(&word) {
                names.selectors.push((word.to_string(), Vec::new()));
                last_metric = Some(names.selectors.len() - 1);
            }
        } else {
            if !c.is_ascii_whitespace() {
                last_metric = None;
            }
            i += 1;
        }
    }
    names
}

fn skip_string(b: &[u8], open: usize) -> usize {
    let quote = b[open];
    let mut i = open + 1;
    while i < b.len() && b[i] != quote {
        i += if b[i] == b'\\' { 2 } else { 1 };
    }
    i + 1
}

/// The label names of `{a="x", b=~"y"}` starting at `open`, and the index after `}`.
fn matchers(expr: &str, open: usize) -> (Vec<String>, usize) {
    let b = expr.as_bytes();
    let mut labels = Vec::new();
    let mut i = open + 1;
    while i < b.len() && b[i] != b'}' {
        if b[i].is_ascii_alphabetic() || b[i] == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            labels.push(expr[start..i].to_string());
        } else if b[i] == b'"' || b[i] == b'\'' || b[i] == b'`' {
            i = skip_string(b, i);
        } else {
            i += 1;
        }
    }
    (labels, i + 1)
}

/// What is wrong with the names in `expr`: metrics nobody exports, labels they do not carry.
pub(super) fn name_problems(expr: &str, known: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let names = scan_promql(expr);
    let mut problems = Vec::new();
    if names.selectors.is_empty() {
        problems.push("names no metric".to_string());
    }
    let mut in_scope: BTreeSet<String> = TARGET_LABELS.iter().map(|l| l.to_string()).collect();
    for (metric, labels) in &names.selectors {
        let Some(allowed) = known.get(metric) else {
            problems.push(format!("no metric `{metric}` is exported"));
            continue;
        };
        in_scope.extend(allowed.iter().cloned());
        for label in labels {
            if !allowed.contains(label) && !TARGET_LABELS.contains(&label.as_str()) {
                problems.push(format!("`{metric}` has no label `{label}`"));
            }
        }
    }
    for label in &names.labels {
        if !in_scope.contains(label) {
            problems.push(format!("no metric in the query has a label `{label}`"));
        }
    }
    problems
}

#[test]
fn the_metric_checker_reads_src_metrics_rs_and_catches_wrong_names() {
    let registered = registered_metrics();
    // The reading of src/metrics.rs itself: a parser that found nothing would pass everything.
    assert!(registered.len() >= 15, "{registered:?}");
    let labels =
        |name: &str| -> Vec<&str> { registered[name].iter().map(String::as_str).collect() };
    assert_eq!(
        labels("gateway_requests_total"),
        ["method", "route", "status_class"]
    );
    assert_eq!(
        labels("gateway_request_duration_seconds_bucket"),
        ["le", "route"]
    );
    assert!(labels("gateway_active_connections").is_empty());
    assert_eq!(labels("gateway_config_reloads_total"), ["result"]);

    let known = known_metrics(&[]);
    let good = r#"sum by (job, status_class) (rate(gateway_requests_total{status_class="5xx", route=~"$route"}[$__rate_interval])) / on (job) group_left sum by (job) (rate(gateway_requests_total[5m] offset 1h)) > 0.05"#;
    assert_eq!(name_problems(good, &known), Vec::<String>::new());
    let quantile = "histogram_quantile(0.95, sum by (le, route) (rate(gateway_request_duration_seconds_bucket[5m])))";
    assert_eq!(name_problems(quantile, &known), Vec::<String>::new());
    for (bad, problem) in [
        (
            "rate(gateway_request_total[5m])",
            "no metric `gateway_request_total`",
        ),
        (
            "rate(http_requests_total[5m])",
            "no metric `http_requests_total`",
        ),
        (
            r#"gateway_requests_total{status="500"}"#,
            "has no label `status`",
        ),
        (
            "sum by (reason) (rate(gateway_requests_total[5m]))",
            "label `reason`",
        ),
        (
            "histogram_quantile(0.95, rate(gateway_request_duration_seconds[5m]))",
            "no metric `gateway_request_duration_seconds`",
        ),
        ("vector(1)", "names no metric"),
    ] {
        let found = name_problems(bad, &known);
        assert!(
            found.iter().any(|p| p.contains(problem)),
            "`{bad}` should report `{problem}`, got {found:?}"
        );
    }
}
