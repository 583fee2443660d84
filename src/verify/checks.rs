//! The grading half of `palisade verify`: pure functions from what a server answered to a
//! finding. Nothing here touches the network, so every rule is unit-tested on its own.

use http::HeaderMap;

use super::Finding;
use crate::policy::headers::presets::{FINGERPRINTS, FINGERPRINT_PREFIXES};

/// Six months: the HSTS floor of the checklists (and of `palisade audit`).
pub const HSTS_MIN_AGE: u64 = 15_552_000;
/// A certificate closer than this to its end gets a warning (like `palisade check`).
pub const EXPIRY_WARN_DAYS: i64 = 14;
/// The origin a page on another site would send.
pub const FOREIGN_ORIGIN: &str = "https://evil.example";

/// The first value of a header as text; a value that is not visible ASCII counts as absent.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// `Strict-Transport-Security`: present, with a `max-age` of at least six months.
pub fn hsts(headers: &HeaderMap) -> Finding {
    const FIX: &str = "send Strict-Transport-Security: max-age=63072000; includeSubDomains \
                       (Palisade: headers = \"strict-api\" or hsts = ...)";
    let Some(value) = header(headers, "strict-transport-security") else {
        return Finding::fail("hsts", "no Strict-Transport-Security header", FIX);
    };
    let max_age = value.split(';').find_map(|d| {
        let (name, v) = d.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| v.trim().trim_matches('"').parse::<u64>().ok())?
    });
    match max_age {
        None => Finding::fail(
            "hsts",
            format!("`{value}` has no valid max-age, so browsers ignore it"),
            FIX,
        ),
        Some(0) => Finding::fail(
            "hsts",
            format!("`{value}`: max-age=0 tells browsers to forget HTTPS"),
            FIX,
        ),
        Some(age) if age < HSTS_MIN_AGE => Finding::warn(
            "hsts",
            format!("`{value}`: max-age under six months ({HSTS_MIN_AGE} s)"),
            "use max-age=63072000 (two years)",
        ),
        Some(_) => Finding::pass("hsts", format!("`{value}`")),
    }
}

/// `Content-Security-Policy`: present and enforced; a script source that allows inline code,
/// `eval` or any host warns.
pub fn csp(headers: &HeaderMap) -> Finding {
    const FIX: &str = "send a Content-Security-Policy, e.g. default-src 'none'; \
                       frame-ancestors 'none' for an API (Palisade: the strict-api or web-app preset)";
    let Some(value) = header(headers, "content-security-policy") else {
        if let Some(report_only) = header(headers, "content-security-policy-report-only") {
            return Finding::warn(
                "csp",
                format!(
                    "report-only, nothing is enforced: `{}`",
                    clip(report_only, 80)
                ),
                "enforce it once the reports are clean (csp_report_only = false)",
            );
        }
        return Finding::fail("csp", "no Content-Security-Policy header", FIX);
    };
    let script_sources = directive(value, "script-src").or_else(|| directive(value, "default-src"));
    let weak: Vec<&str> = script_sources
        .map(|sources| {
            sources
                .split_ascii_whitespace()
                .filter(|s| matches!(*s, "'unsafe-inline'" | "'unsafe-eval'" | "*" | "data:"))
                .collect()
        })
        .unwrap_or_default();
    if weak.is_empty() {
        Finding::pass("csp", format!("`{}`", clip(value, 80)))
    } else {
        Finding::warn(
            "csp",
            format!(
                "scripts may come from {}: `{}`",
                weak.join(" "),
                clip(value, 80)
            ),
            "drop 'unsafe-inline', 'unsafe-eval', * and data: from script-src",
        )
    }
}

/// The sources of one CSP directive, if the policy has it.
fn directive<'a>(csp: &'a str, name: &str) -> Option<&'a str> {
    csp.split(';').find_map(|d| {
        let d = d.trim();
        let (n, rest) = d.split_once(char::is_whitespace).unwrap_or((d, ""));
        n.eq_ignore_ascii_case(name).then_some(rest.trim())
    })
}

pub fn nosniff(headers: &HeaderMap) -> Finding {
    match header(headers, "x-content-type-options") {
        Some(v) if v.eq_ignore_ascii_case("nosniff") => {
            Finding::pass("nosniff", "X-Content-Type-Options: nosniff")
        }
        Some(v) => Finding::fail(
            "nosniff",
            format!("X-Content-Type-Options: `{v}` is not nosniff"),
            "send X-Content-Type-Options: nosniff",
        ),
        None => Finding::fail(
            "nosniff",
            "no X-Content-Type-Options: browsers may sniff JSON into HTML",
            "send X-Content-Type-Options: nosniff",
        ),
    }
}

/// Clickjacking: `X-Frame-Options` (DENY, SAMEORIGIN) or CSP `frame-ancestors`.
pub fn frame(headers: &HeaderMap) -> Finding {
    const FIX: &str = "send X-Frame-Options: DENY and CSP frame-ancestors 'none'";
    let ancestors = header(headers, "content-security-policy")
        .and_then(|csp| directive(csp, "frame-ancestors"));
    if let Some(sources) = ancestors {
        if sources.split_ascii_whitespace().any(|s| s == "*") {
            return Finding::fail(
                "frame",
                format!("CSP frame-ancestors `{sources}` lets any site frame the pages"),
                FIX,
            );
        }
    }
    let xfo = header(headers, "x-frame-options");
    let xfo_ok =
        xfo.is_some_and(|v| v.eq_ignore_ascii_case("deny") || v.eq_ignore_ascii_case("sameorigin"));
    match (xfo, ancestors) {
        (Some(v), _) if !xfo_ok && ancestors.is_none() => Finding::fail(
            "frame",
            format!("X-Frame-Options: `{v}` does not stop framing"),
            FIX,
        ),
        (_, Some(sources)) => Finding::pass(
            "frame",
            match xfo {
                Some(v) => format!("CSP frame-ancestors {sources}; X-Frame-Options: {v}"),
                None => format!("CSP frame-ancestors {sources}"),
            },
        ),
        (Some(v), None) => Finding::pass("frame", format!("X-Frame-Options: {v}")),
        (None, None) => Finding::fail(
            "frame",
            "neither X-Frame-Options nor CSP frame-ancestors: any site can frame the pages",
            FIX,
        ),
    }
}

pub fn referrer(headers: &HeaderMap) -> Finding {
    const FIX: &str = "send Referrer-Policy: no-referrer (APIs) or strict-origin-when-cross-origin";
    let Some(value) = header(headers, "referrer-policy") else {
        return Finding::warn(
            "referrer",
            "no Referrer-Policy (modern browsers default to strict-origin-when-cross-origin)",
            FIX,
        );
    };
    // Browsers use the last token they understand.
    let last = value
        .rsplit(',')
        .map(str::trim)
        .find(|t| !t.is_empty())
        .unwrap_or_default()
        .to_ascii_lowercase();
    match last.as_str() {
        "no-referrer" | "same-origin" | "strict-origin" | "strict-origin-when-cross-origin" => {
            Finding::pass("referrer", format!("Referrer-Policy: {value}"))
        }
        "unsafe-url" | "no-referrer-when-downgrade" => Finding::fail(
            "referrer",
            format!("Referrer-Policy: {value} sends full URLs (ids, tokens) to other sites"),
            FIX,
        ),
        _ => Finding::warn(
            "referrer",
            format!("Referrer-Policy: {value} is weaker than it needs to be"),
            FIX,
        ),
    }
}

/// Response headers that name the software behind the gateway. `Server` is a fingerprint
/// only when it carries a version (`Apache/2.4.1`); a bare product name is tolerated.
pub fn fingerprints(responses: &[(&str, &HeaderMap)]) -> Finding {
    let mut found: Vec<String> = Vec::new();
    let mut bare_server = None;
    for (_, headers) in responses {
        for (name, value) in headers.iter() {
            let name = name.as_str();
            let listed = FINGERPRINTS.contains(&name)
                || FINGERPRINT_PREFIXES.iter().any(|p| name.starts_with(p));
            if !listed {
                continue;
            }
            let value = String::from_utf8_lossy(value.as_bytes());
            if name == "server" && !value.bytes().any(|b| b.is_ascii_digit()) {
                bare_server = Some(value.into_owned());
                continue;
            }
            let item = format!("{name}: {}", clip(&value, 40));
            if !found.contains(&item) {
                found.push(item);
            }
        }
    }
    if !found.is_empty() {
        return Finding::fail(
            "fingerprints",
            format!("the responses name their software: {}", found.join(", ")),
            "remove them at the edge (Palisade: any header policy, strip_fingerprints = true)",
        );
    }
    match bare_server {
        Some(server) => Finding::pass(
            "fingerprints",
            format!("no versions or framework headers (Server: {server}, without a version)"),
        ),
        None => Finding::pass(
            "fingerprints",
            "no Server, X-Powered-By or other fingerprint headers",
        ),
    }
}

/// What a body tells an attacker: stack traces, versions, addresses, host names. Returns one
/// description per kind found, each with the text that gave it away.
pub fn leaks(body: &str) -> Vec<String> {
    let lower = body.to_ascii_lowercase();
    let mut out = Vec::new();
    const TRACES: &[&str] = &[
        "traceback (most recent call last)",
        "panicked at",
        "stack trace",
        "stacktrace",
        "\n\tat ",
        "\n    at ",
        ".java:",
        ".py\", line ",
        "node_modules",
        "goroutine ",
        "sqlstate",
        "fatal error",
        "undefined method",
        "on line <b>",
        "exception",
    ];
    if let Some(marker) = TRACES.iter().find(|m| lower.contains(*m)) {
        out.push(format!(
            "a stack trace or error internals (`{}`)",
            marker.trim()
        ));
    }
    if let Some(token) = product_version(body) {
        out.push(format!("a software version (`{token}`)"));
    } else if let Some(token) = dotted_number(body) {
        let parts: Vec<&str> = token.split('.').collect();
        let ip = parts.len() == 4 && parts.iter().all(|p| p.parse::<u8>().is_ok());
        let kind = if ip {
            "an IP address"
        } else {
            "a version number"
        };
        out.push(format!("{kind} (`{token}`)"));
    } else if let Some(key) = ["\"version\"", "version:", "version="]
        .iter()
        .find(|k| lower.contains(*k))
    {
        out.push(format!("a version field (`{key}`)"));
    }
    const HOSTS: &[&str] = &[
        "\"hostname\"",
        "hostname:",
        "\"host\":",
        "\"server\":",
        "\"node\":",
        "\"pod\":",
        "\"ip\":",
        ".internal",
        ".svc.cluster.local",
        ".local\"",
        ".corp",
    ];
    if let Some(marker) = HOSTS.iter().find(|m| lower.contains(*m)) {
        out.push(format!("a host name or address (`{marker}`)"));
    }
    out
}

/// `Apache/2.4.1`, `PHP/5.6`: a product name, a slash and a dotted version.
fn product_version(body: &str) -> Option<&str> {
    let bytes = body.as_bytes();
    for (slash, _) in body.match_indices('/') {
        let after = &bytes[slash + 1..];
        let digits = after.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || after.get(digits) != Some(&b'.') {
            continue;
        }
        if !after.get(digits + 1).is_some_and(u8::is_ascii_digit) {
            continue;
        }
        let start = bytes[..slash]
            .iter()
            .rposition(|b| !(b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_'))
            .map_or(0, |p| p + 1);
        if start == slash || !bytes[start].is_ascii_alphabetic() {
            continue;
        }
        let end = slash
            + 1
            + after
                .iter()
                .take_while(|b| b.is_ascii_digit() || **b == b'.')
                .count();
        return body.get(start..end).map(|t| t.trim_end_matches('.'));
    }
    None
}

/// A run of three or more dot-separated numbers (`5.6.1`, `10.0.3.7`).
fn dotted_number(body: &str) -> Option<&str> {
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() || (i > 0 && bytes[i - 1].is_ascii_alphanumeric()) {
            i += 1;
            continue;
        }
        let start = i;
        let mut dots = 0;
        while i < bytes.len()
            && (bytes[i].is_ascii_digit()
                || (bytes[i] == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)))
        {
            if bytes[i] == b'.' {
                dots += 1;
            }
            i += 1;
        }
        if dots >= 2 {
            return body.get(start..i);
        }
    }
    None
}

/// `/healthz` on the public address: 404 (the gateway keeps it on its admin listener) or an
/// answer that reveals nothing.
pub fn healthz(status: u16, body: &str) -> Finding {
    const FIX: &str = "serve /healthz only on a private listener (Palisade: [admin] listen on \
                       loopback), or answer a bare `ok` publicly";
    let found = leaks(body);
    if !found.is_empty() {
        return Finding::fail(
            "healthz",
            format!("public /healthz answers {status} with {}", found.join(", ")),
            FIX,
        );
    }
    match status {
        404 => Finding::pass(
            "healthz",
            "public /healthz answers 404: health is on a private listener",
        ),
        401 | 403 => Finding::pass("healthz", format!("public /healthz is refused ({status})")),
        200..=399 => Finding::pass(
            "healthz",
            format!(
                "public /healthz answers {status} `{}` and reveals nothing",
                clip(body.trim(), 40)
            ),
        ),
        _ => Finding::warn(
            "healthz",
            format!("public /healthz answers {status}"),
            "answer 404, or a bare `ok`",
        ),
    }
}

/// A random path: refused (404) with a body that reveals nothing.
pub fn not_found(path: &str, status: u16, content_type: Option<&str>, body: &str) -> Finding {
    let found = leaks(body);
    if !found.is_empty() {
        return Finding::fail(
            "not_found",
            format!("{path} answers {status} with {}", found.join(", ")),
            "answer errors with a bare JSON error (Palisade's own 404 does; mask_errors \
             for upstream 5xx)",
        );
    }
    let kind = content_type.unwrap_or("no content type");
    match status {
        200..=299 => Finding::warn(
            "not_found",
            format!("{path} answers {status}: everything is served, even what does not exist"),
            "answer 404 for unknown paths (route only the app's prefixes)",
        ),
        500..=599 => Finding::warn(
            "not_found",
            format!("{path} answers {status} ({kind})"),
            "answer 404 for unknown paths",
        ),
        _ => Finding::pass(
            "not_found",
            format!("{path} answers {status} ({kind}) and reveals nothing"),
        ),
    }
}

/// Days left on the leaf certificate, from Unix times: expired or not yet valid fails, under
/// two weeks warns.
pub fn cert_expiry(now: i64, not_before: i64, not_after: i64) -> Finding {
    let days = (not_after - now).div_euclid(86_400);
    let when = date(not_after);
    if now < not_before {
        Finding::fail(
            "cert_expiry",
            format!("not valid before {}", date(not_before)),
            "check the server's clock, or reissue the certificate",
        )
    } else if now >= not_after {
        Finding::fail(
            "cert_expiry",
            format!("expired on {when}"),
            "renew the certificate (and alert on gateway_tls_cert_expiry_timestamp_seconds)",
        )
    } else if days < EXPIRY_WARN_DAYS {
        Finding::warn(
            "cert_expiry",
            format!("expires in {days} days ({when})"),
            "renew the certificate now",
        )
    } else {
        Finding::pass("cert_expiry", format!("expires in {days} days ({when})"))
    }
}

/// `2026-11-23` for a Unix time.
fn date(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!("{}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()),
        Err(_) => unix.to_string(),
    }
}

/// What an oversized `POST` met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyAnswer {
    /// The status of the answer, if one came before the connection closed.
    pub status: Option<u16>,
    /// Body bytes written before the answer (or the close).
    pub sent: u64,
    /// The size declared in `Content-Length`.
    pub size: u64,
}

pub fn body_limit(a: BodyAnswer) -> Finding {
    const FIX: &str = "limit request bodies (Palisade: max_body, refused on Content-Length \
                       before a byte is read)";
    let size = a.size;
    match a.status {
        Some(413) if a.sent == 0 => Finding::pass(
            "body_limit",
            format!("413 for a body of {size} bytes, before any of it was sent"),
        ),
        Some(413) if a.sent < size => Finding::pass(
            "body_limit",
            format!("413 for a body of {size} bytes, after {} were sent", a.sent),
        ),
        Some(413) => Finding::warn(
            "body_limit",
            format!("413 for a body of {size} bytes, but only after all of it was sent"),
            "refuse on Content-Length before reading the body",
        ),
        Some(status @ (200..=399 | 500..=599)) => Finding::fail(
            "body_limit",
            format!("a body of {size} bytes got {status}, not 413: it was read"),
            FIX,
        ),
        Some(status) => Finding::warn(
            "body_limit",
            format!(
                "a POST of {size} bytes got {status}, not 413: the limit was not reached \
                 (the URL refuses the POST itself)"
            ),
            "point verify at a URL that accepts POST",
        ),
        None => Finding::warn(
            "body_limit",
            format!(
                "the connection closed after {} of {size} bytes without an answer",
                a.sent
            ),
            "answer 413 before closing",
        ),
    }
}

/// CORS as seen by a page on a foreign origin: no `Access-Control-Allow-Origin` for it, and
/// never `*` with credentials. `responses` are the simple request and the preflight.
pub fn cors(responses: &[(&str, &HeaderMap)]) -> Finding {
    const FIX: &str = "allow only listed origins (Palisade: [cors.NAME] allow_origins)";
    let mut worst = Finding::pass(
        "cors",
        format!("no Access-Control-Allow-Origin for Origin: {FOREIGN_ORIGIN}"),
    );
    for (label, headers) in responses {
        let Some(allow) = header(headers, "access-control-allow-origin") else {
            continue;
        };
        let credentials = header(headers, "access-control-allow-credentials")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let with = if credentials { " with credentials" } else { "" };
        let finding = if allow == FOREIGN_ORIGIN {
            Finding::fail(
                "cors",
                format!("the {label} echoes Origin: {FOREIGN_ORIGIN} in Access-Control-Allow-Origin{with}: any site can read the answers"),
                FIX,
            )
        } else if allow.eq_ignore_ascii_case("null") {
            Finding::fail(
                "cors",
                format!("the {label} allows the `null` origin{with}: sandboxed pages and files of any site can read the answers"),
                FIX,
            )
        } else if allow == "*" && credentials {
            Finding::fail(
                "cors",
                format!("the {label} answers `*` with credentials"),
                FIX,
            )
        } else if allow == "*" {
            Finding::warn(
                "cors",
                format!("the {label} allows any origin (`*`)"),
                "list the origins, unless the API is meant to be public",
            )
        } else {
            Finding::pass(
                "cors",
                format!("the {label} allows only `{allow}`, not {FOREIGN_ORIGIN}"),
            )
        };
        if finding.grade > worst.grade {
            worst = finding;
        }
    }
    worst
}

/// The first 429 of a burst: `Retry-After`, and the rate-limit fields a client paces itself by.
pub fn too_many(after: usize, of: usize, headers: &HeaderMap) -> Finding {
    let retry_after = header(headers, "retry-after");
    let fields: Vec<String> = [
        "ratelimit",
        "ratelimit-policy",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ]
    .iter()
    .filter_map(|name| header(headers, name).map(|v| format!("{name}: {}", clip(v, 30))))
    .collect();
    let seen = format!("429 after {after} of at most {of} requests");
    match retry_after {
        None => Finding::fail(
            "rate_limit",
            format!("{seen}, without Retry-After"),
            "send Retry-After with every 429 (Palisade does)",
        ),
        Some(_) if fields.is_empty() => Finding::warn(
            "rate_limit",
            format!("{seen}, with Retry-After but no RateLimit or X-RateLimit-* fields"),
            "send RateLimit / X-RateLimit-* fields (Palisade: headers = true)",
        ),
        Some(retry) => Finding::pass(
            "rate_limit",
            format!("{seen}; retry-after: {retry}, {}", fields.join(", ")),
        ),
    }
}

/// Shortens what a server sent to something a line can hold.
pub fn clip(text: &str, max: usize) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match clean.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &clean[..i]),
        None => clean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Grade;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                value.parse().expect("value"),
            );
        }
        h
    }

    #[test]
    fn hsts_needs_six_months() {
        let g = |v: &str| hsts(&headers(&[("strict-transport-security", v)])).grade;
        assert_eq!(g("max-age=63072000; includeSubDomains"), Grade::Pass);
        assert_eq!(g("max-age=\"15552000\""), Grade::Pass);
        assert_eq!(g("max-age=86400"), Grade::Warn);
        assert_eq!(g("max-age=0"), Grade::Fail);
        assert_eq!(g("includeSubDomains"), Grade::Fail);
        assert_eq!(hsts(&headers(&[])).grade, Grade::Fail);
    }

    #[test]
    fn csp_enforced_and_without_inline_scripts() {
        let g = |pairs: &[(&str, &str)]| csp(&headers(pairs)).grade;
        assert_eq!(
            g(&[(
                "content-security-policy",
                "default-src 'none'; frame-ancestors 'none'"
            )]),
            Grade::Pass
        );
        assert_eq!(
            g(&[(
                "content-security-policy",
                "default-src 'self'; script-src 'self' 'unsafe-inline'"
            )]),
            Grade::Warn
        );
        assert_eq!(
            g(&[("content-security-policy-report-only", "default-src 'none'")]),
            Grade::Warn
        );
        assert_eq!(g(&[]), Grade::Fail);
    }

    #[test]
    fn framing_is_stopped_by_either_header() {
        let g = |pairs: &[(&str, &str)]| frame(&headers(pairs)).grade;
        assert_eq!(g(&[("x-frame-options", "DENY")]), Grade::Pass);
        assert_eq!(
            g(&[("content-security-policy", "frame-ancestors 'self'")]),
            Grade::Pass
        );
        assert_eq!(g(&[("x-frame-options", "ALLOWALL")]), Grade::Fail);
        assert_eq!(
            g(&[("content-security-policy", "frame-ancestors *")]),
            Grade::Fail
        );
        assert_eq!(g(&[]), Grade::Fail);
    }

    #[test]
    fn referrer_policies_by_what_they_send() {
        let g = |v: &str| referrer(&headers(&[("referrer-policy", v)])).grade;
        assert_eq!(g("no-referrer"), Grade::Pass);
        assert_eq!(
            g("unsafe-url, strict-origin-when-cross-origin"),
            Grade::Pass
        );
        assert_eq!(g("unsafe-url"), Grade::Fail);
        assert_eq!(g("origin"), Grade::Warn);
        assert_eq!(referrer(&headers(&[])).grade, Grade::Warn);
    }

    #[test]
    fn fingerprints_are_versions_and_framework_headers() {
        let legacy = headers(&[("server", "Apache/2.4.1"), ("x-powered-by", "PHP/5.6")]);
        let f = fingerprints(&[("response", &legacy)]);
        assert_eq!(f.grade, Grade::Fail);
        assert!(f.reason.contains("server: Apache/2.4.1"), "{}", f.reason);
        assert!(f.reason.contains("x-powered-by: PHP/5.6"), "{}", f.reason);
        let drupal = headers(&[("x-drupal-cache", "HIT")]);
        assert_eq!(fingerprints(&[("r", &drupal)]).grade, Grade::Fail);
        let bare = headers(&[("server", "cloudflare"), ("x-request-id", "abc")]);
        assert_eq!(fingerprints(&[("r", &bare)]).grade, Grade::Pass);
    }

    #[test]
    fn the_gateways_own_error_bodies_reveal_nothing() {
        for body in [
            r#"{"error":"no route for this host and path","request_id":"9de438b20bb76dff67495fb9028ad130"}"#,
            "ok",
            r#"{"status":"ok"}"#,
            r#"{"status":"ready","uptime_seconds":12}"#,
            "<html><body>Not Found: /palisade-verify-1a2b</body></html>",
        ] {
            assert!(leaks(body).is_empty(), "{body}: {:?}", leaks(body));
        }
    }

    #[test]
    fn traces_versions_and_hosts_are_leaks() {
        let l = leaks("Traceback (most recent call last):\n  File \"app.py\", line 3");
        assert!(l[0].contains("stack trace"), "{l:?}");
        assert!(leaks("Apache/2.4.1 (Ubuntu) Server at db-01")
            .iter()
            .any(|l| l.contains("Apache/2.4.1")));
        assert!(
            leaks(r#"{"status":"ok","version":"0.1.0","uptime_seconds":3}"#)
                .iter()
                .any(|l| l.contains("0.1.0"))
        );
        assert!(leaks(r#"{"status":"ok","version":"abc"}"#)
            .iter()
            .any(|l| l.contains("version field")));
        assert!(leaks("upstream 10.0.3.7 refused")
            .iter()
            .any(|l| l.contains("IP address")));
        assert!(leaks(r#"{"hostname":"web-7"}"#)
            .iter()
            .any(|l| l.contains("host name")));
        assert!(leaks(r#"panicked at src/main.rs:3:5"#)
            .iter()
            .any(|l| l.contains("panicked")));
    }

    #[test]
    fn healthz_grades() {
        assert_eq!(healthz(404, "{}").grade, Grade::Pass);
        assert_eq!(healthz(200, "ok").grade, Grade::Pass);
        assert_eq!(
            healthz(
                200,
                r#"{"status":"ok","version":"0.1.0","uptime_seconds":3}"#
            )
            .grade,
            Grade::Fail
        );
    }

    #[test]
    fn certificates_fail_expired_and_warn_two_weeks_ahead() {
        let day = 86_400;
        let now = 1_795_432_812; // 2026-11-23
        let g = |before: i64, after: i64| cert_expiry(now, now + before, now + after);
        assert_eq!(g(-day, 90 * day).grade, Grade::Pass);
        let soon = g(-day, 13 * day + 60);
        assert_eq!(soon.grade, Grade::Warn);
        assert_eq!(soon.reason, "expires in 13 days (2026-12-06)");
        assert_eq!(g(-day, 14 * day).grade, Grade::Pass);
        let expired = g(-90 * day, -day);
        assert_eq!(expired.grade, Grade::Fail);
        assert_eq!(expired.reason, "expired on 2026-11-22");
        assert_eq!(g(-90 * day, 0).grade, Grade::Fail, "expired this second");
        assert_eq!(g(day, 90 * day).grade, Grade::Fail, "not yet valid");
    }

    #[test]
    fn dates_are_iso() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(1_795_432_812), "2026-11-23");
    }

    #[test]
    fn body_limit_wants_413_early() {
        let a = |status, sent| {
            body_limit(BodyAnswer {
                status,
                sent,
                size: 100,
            })
            .grade
        };
        assert_eq!(a(Some(413), 0), Grade::Pass);
        assert_eq!(a(Some(413), 50), Grade::Pass);
        assert_eq!(a(Some(413), 100), Grade::Warn);
        assert_eq!(a(Some(200), 100), Grade::Fail);
        assert_eq!(a(Some(502), 100), Grade::Fail);
        assert_eq!(a(Some(405), 0), Grade::Warn);
        assert_eq!(a(None, 10), Grade::Warn);
    }

    #[test]
    fn cors_never_for_a_foreign_origin() {
        let none = headers(&[]);
        assert_eq!(cors(&[("GET", &none)]).grade, Grade::Pass);
        let reflected = headers(&[
            ("access-control-allow-origin", FOREIGN_ORIGIN),
            ("access-control-allow-credentials", "true"),
        ]);
        let f = cors(&[("GET", &none), ("preflight", &reflected)]);
        assert_eq!(f.grade, Grade::Fail);
        assert!(f.reason.contains("with credentials"), "{}", f.reason);
        let star = headers(&[("access-control-allow-origin", "*")]);
        assert_eq!(cors(&[("GET", &star)]).grade, Grade::Warn);
        let star_creds = headers(&[
            ("access-control-allow-origin", "*"),
            ("access-control-allow-credentials", "true"),
        ]);
        assert_eq!(cors(&[("GET", &star_creds)]).grade, Grade::Fail);
        let other = headers(&[("access-control-allow-origin", "https://app.example.com")]);
        assert_eq!(cors(&[("GET", &other)]).grade, Grade::Pass);
    }

    #[test]
    fn a_429_needs_retry_after_and_rate_limit_fields() {
        let full = headers(&[
            ("retry-after", "12"),
            ("x-ratelimit-limit", "20"),
            ("ratelimit", "\"per_ip\";r=0;t=12"),
        ]);
        assert_eq!(too_many(21, 50, &full).grade, Grade::Pass);
        let bare = headers(&[("retry-after", "12")]);
        assert_eq!(too_many(21, 50, &bare).grade, Grade::Warn);
        assert_eq!(too_many(21, 50, &headers(&[])).grade, Grade::Fail);
    }

    #[test]
    fn clip_keeps_lines_short_and_printable() {
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("abcdef", 3), "abc...");
        assert_eq!(clip("a\r\nb", 10), "a  b");
    }
}
