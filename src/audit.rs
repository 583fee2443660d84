//! `palisade audit FILE`: grades a config against the production checklists our users bring
//! (shared/seeds): one line per check, PASS / WARN / FAIL, the reason and the fix.

use serde::Serialize;

use crate::config::{Config, SecretRef};
use crate::runtime::Runtime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Grade {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
pub struct Finding {
    pub grade: Grade,
    pub check: &'static str,
    pub reason: String,
    /// What to change; empty on a pass.
    pub fix: &'static str,
}

const SIX_MONTHS: u64 = 15_552_000;
/// Paths that are worth an attacker's guesses.
const CREDENTIAL_PATHS: &[&str] = &[
    "login", "signin", "signup", "register", "token", "password", "auth",
];

pub fn audit(config: &Config, runtime: &Runtime) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut add = |grade, check, reason: String, fix| {
        out.push(Finding {
            grade,
            check,
            reason,
            fix,
        })
    };

    // Transport.
    if runtime.listeners.tls.is_empty() {
        add(
            Grade::Fail,
            "https",
            "no HTTPS listener".into(),
            "add tls_listen and a [tls] certificate",
        );
    } else {
        add(
            Grade::Pass,
            "https",
            format!("{} HTTPS listener(s)", runtime.listeners.tls.len()),
            "",
        );
    }
    if !runtime.listeners.plain.is_empty() && runtime.redirect_https.is_none() {
        add(
            Grade::Fail,
            "redirect_https",
            "plain HTTP is served without a redirect to HTTPS".into(),
            "set [server] redirect_https = true (and tls_listen)",
        );
    } else {
        add(
            Grade::Pass,
            "redirect_https",
            "plain HTTP redirects to HTTPS, or is not served".into(),
            "",
        );
    }
    let tls13 = runtime
        .tls
        .as_ref()
        .is_some_and(|t| t.min_version == crate::tls::MinVersion::Tls13);
    let minimum = if tls13 { "1.3" } else { "1.2" };
    add(
        Grade::Pass,
        "tls_version",
        format!("TLS {minimum} minimum (never below 1.2)"),
        "",
    );
    if runtime.listeners.admin.ip().is_loopback() {
        add(
            Grade::Pass,
            "admin",
            format!("admin listener on loopback ({})", runtime.listeners.admin),
            "",
        );
    } else {
        add(
            Grade::Fail,
            "admin",
            format!(
                "admin listener on {}: /metrics and /readyz reachable from the network",
                runtime.listeners.admin
            ),
            "set [admin] listen = \"127.0.0.1:9901\"",
        );
    }

    // Response hardening, route by route.
    for route in runtime.router.iter() {
        let name = &route.name;
        match &route.headers {
            None => add(
                Grade::Fail,
                "headers",
                format!("route `{name}` sends no security headers (headers = \"none\")"),
                "use a header policy such as \"strict-api\"",
            ),
            Some(policy) => {
                match policy.hsts_max_age() {
                    None => add(
                        Grade::Fail,
                        "hsts",
                        format!("route `{name}` sends no HSTS"),
                        "set hsts = \"max-age=63072000; includeSubDomains\"",
                    ),
                    Some(age) if age < SIX_MONTHS => add(
                        Grade::Warn,
                        "hsts",
                        format!("route `{name}`: HSTS max-age={age} is under six months"),
                        "use max-age=63072000",
                    ),
                    Some(age) => add(
                        Grade::Pass,
                        "hsts",
                        format!("route `{name}`: HSTS max-age={age}"),
                        "",
                    ),
                }
                if policy.has_csp() {
                    add(
                        Grade::Pass,
                        "csp",
                        format!("route `{name}` sends a CSP"),
                        "",
                    );
                } else {
                    add(
                        Grade::Fail,
                        "csp",
                        format!("route `{name}` sends no Content-Security-Policy"),
                        "use the strict-api or web-app preset, or set csp",
                    );
                }
                if !policy.mask_errors {
                    add(
                        Grade::Warn,
                        "mask_errors",
                        format!("route `{name}` lets upstream 5xx bodies (stack traces) through"),
                        "set mask_errors = true",
                    );
                }
            }
        }
        let sensitive = CREDENTIAL_PATHS
            .iter()
            .any(|p| route.prefix_str().to_ascii_lowercase().contains(p));
        if sensitive || route.auth.is_some() {
            let what = if route.auth.is_some() {
                "checks API keys"
            } else {
                "looks like a credential endpoint"
            };
            if route.rate_limits.is_empty() && route.lockout.is_none() {
                add(Grade::Fail, "login_limits", format!("route `{name}` {what} and has no rate limit or lockout before it: keys and passwords can be guessed at full speed"), "add a per-IP rate limit and a [lockouts.NAME]");
            } else {
                add(
                    Grade::Pass,
                    "login_limits",
                    format!("route `{name}` is limited"),
                    "",
                );
            }
        }
    }

    // Limits.
    let global = runtime.rate_limits.values().any(|p| p.is_global());
    if global {
        add(
            Grade::Pass,
            "global_limit",
            "a global rate limit exists".into(),
            "",
        );
    } else {
        add(
            Grade::Warn,
            "global_limit",
            "no rate limit keyed on `global`: nothing caps the total load".into(),
            "add [rate_limits.global] key = \"global\" to [defaults]",
        );
    }
    let instances = config.server.instances;
    let local: Vec<&str> = runtime
        .rate_limits
        .values()
        .filter(|p| p.is_local())
        .map(|p| p.name.as_str())
        .collect();
    if instances > 1 && !local.is_empty() {
        add(
            Grade::Fail,
            "shared_limits",
            format!(
                "[server] instances = {instances}, but rate limits {} are kept per instance: together they allow {instances} times the limit",
                local.join(", ")
            ),
            "set store = \"redis\" on them and add [redis]",
        );
    } else if instances > 1 {
        add(
            Grade::Pass,
            "shared_limits",
            format!("{instances} instances share every rate limit through Redis"),
            "",
        );
    }
    let largest = runtime.router.iter().map(|r| r.max_body).max().unwrap_or(0);
    if largest > 16 * 1024 * 1024 {
        add(
            Grade::Warn,
            "max_body",
            format!("a route accepts bodies up to {largest} bytes"),
            "keep max_body to what the app needs",
        );
    } else {
        add(
            Grade::Pass,
            "max_body",
            format!("bodies are limited (largest {largest} bytes)"),
            "",
        );
    }

    // CORS and secrets, as written.
    for (name, cors) in &config.cors {
        if cors.allow_origins.iter().any(|o| o == "*") {
            add(
                Grade::Warn,
                "cors",
                format!("[cors.{name}] allows any origin"),
                "list the origins",
            );
        }
    }
    let inline_tls = config
        .tls
        .iter()
        .flat_map(|t| t.certificates.iter())
        .any(|c| matches!(c.key, SecretRef::Inline(_)));
    let inline_redis = config
        .redis
        .as_ref()
        .is_some_and(|r| matches!(r.url, SecretRef::Inline(_)));
    let inline_keys = config.api_keys.values().any(|k| {
        [&k.current, &k.next]
            .into_iter()
            .flatten()
            .chain(k.keys.iter().filter_map(|n| n.key.as_ref()))
            .any(|s| matches!(s, SecretRef::Inline(_)))
    });
    let inline_webhook = config
        .routes
        .iter()
        .filter_map(|r| r.webhook.as_ref())
        .any(|w| match &w.secret {
            crate::policy::webhook::Secrets::One(s) => matches!(s, SecretRef::Inline(_)),
            crate::policy::webhook::Secrets::Many(list) => {
                list.iter().any(|s| matches!(s, SecretRef::Inline(_)))
            }
        });
    if inline_tls || inline_redis || inline_keys || inline_webhook {
        add(
            Grade::Fail,
            "secrets",
            "a secret (TLS key, Redis URL, API keys or webhook secret) is written inline in the config".into(),
            "use { env = \"NAME\" } or { file = \"/path\" }",
        );
    } else {
        add(
            Grade::Pass,
            "secrets",
            "secrets are references (env or file)".into(),
            "",
        );
    }
    out
}
