//! `[headers.NAME]`: security headers, fingerprint stripping, cookie flags, error masking and
//! `X-Robots-Tag`, applied to every response (the upstream's and the gateway's own).
//!
//! Modes: preset headers, `csp`, `hsts`, `robots`, `server` and `set` override what the app
//! sent; `fill` (and the presets' `Cache-Control: no-store`) only fill in when it sent none.

pub mod cookies;
pub mod csp;
pub mod fixed;
pub mod name_set;
pub mod presets;

use std::collections::{BTreeMap, HashSet};

use http::{HeaderName, HeaderValue};
use pingora_http::ResponseHeader;
use serde::Deserialize;

use crate::config::diagnostics::Diagnostics;
use crate::config::KeyPath;
use cookies::{CookiePolicy, SameSite};
use fixed::PER_RESPONSE_LINES;
pub use fixed::{FixedHeaders, HeaderForm, HeaderLines, ResponseLines};
use name_set::NameSet;
use pingora_core::protocols::http::v1::client::frames_the_response;

/// A string value, or `false` to turn the thing off.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged, expecting = "a string, or false to turn it off")]
pub enum ValueOrOff<T> {
    Off(bool),
    Value(T),
}

/// `[headers.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadersConfig {
    /// `strict-api` | `web-app` | `baseline`. Default `baseline`.
    #[serde(default = "default_preset")]
    pub preset: String,
    /// Strict-Transport-Security, sent on HTTPS only; `false` sends none. Default: the preset's.
    pub hsts: Option<ValueOrOff<String>>,
    /// Content-Security-Policy; `false` sends none. Default: the preset's.
    pub csp: Option<ValueOrOff<String>>,
    /// Send the CSP as Content-Security-Policy-Report-Only. Default false.
    #[serde(default)]
    pub csp_report_only: bool,
    /// Where browsers report CSP violations: adds `Reporting-Endpoints: csp="URL"` and
    /// `report-to csp` to the CSP. Default none.
    pub report_to: Option<String>,
    /// Headers set on every response, overriding the app's.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Headers set only when the response has none.
    #[serde(default)]
    pub fill: BTreeMap<String, String>,
    /// Headers removed, on top of the fingerprint list.
    #[serde(default)]
    pub remove: Vec<String>,
    /// Remove `Server`, `X-Powered-By` and the rest of the fingerprint list. Default true.
    #[serde(default = "yes")]
    pub strip_fingerprints: bool,
    /// A `Server` value to send instead of none. Default none.
    pub server: Option<String>,
    /// Set-Cookie hardening; `false` leaves cookies alone. Default on (Secure, HttpOnly, Lax).
    pub cookies: Option<ValueOrOff<CookiesConfig>>,
    /// Replace upstream 5xx bodies with the gateway's JSON. Default true.
    #[serde(default = "yes")]
    pub mask_errors: bool,
    /// X-Robots-Tag, e.g. "noindex, nofollow". Default none.
    pub robots: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CookiesConfig {
    /// Add `Secure` over HTTPS. Default true.
    #[serde(default = "yes")]
    pub secure: bool,
    /// Add `HttpOnly`. Default true.
    #[serde(default = "yes")]
    pub http_only: bool,
    /// `Strict` | `Lax` | `None` | `off`. Default `Lax`.
    #[serde(default = "default_same_site")]
    pub same_site: String,
    /// Cookie names left untouched. Default none.
    #[serde(default)]
    pub exclude: Vec<String>,
}

fn default_preset() -> String {
    "baseline".into()
}
fn default_same_site() -> String {
    "Lax".into()
}
fn yes() -> bool {
    true
}

impl Default for CookiesConfig {
    fn default() -> Self {
        CookiesConfig {
            secure: true,
            http_only: true,
            same_site: default_same_site(),
            exclude: Vec::new(),
        }
    }
}

impl HeadersConfig {
    /// A built-in preset used by name, with every other setting at its default.
    pub fn preset(name: &str) -> HeadersConfig {
        HeadersConfig {
            preset: name.to_string(),
            hsts: None,
            csp: None,
            csp_report_only: false,
            report_to: None,
            set: BTreeMap::new(),
            fill: BTreeMap::new(),
            remove: Vec::new(),
            strip_fingerprints: true,
            server: None,
            cookies: None,
            mask_errors: true,
            robots: None,
        }
    }
}

/// Headers that describe the message itself: a policy that set them would break responses.
const FRAMING: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "trailer",
    "te",
    "content-encoding",
    "set-cookie",
    "x-request-id",
    "ratelimit",
    "ratelimit-policy",
];

/// A compiled header policy: every name and value built once at load.
#[derive(Debug)]
pub struct HeaderPolicy {
    /// What every response gets over plain HTTP, and over HTTPS (the same and HSTS).
    set: FixedHeaders,
    set_https: FixedHeaders,
    /// Each `fill` header on its own: it goes out only when the response has none.
    fill: Vec<(HeaderName, FixedHeaders)>,
    hsts: Option<HeaderValue>,
    has_csp: bool,
    /// The response's own headers that go: the removed and fingerprint ones (names and
    /// prefixes), and those the policy sets (HSTS included: over plain HTTP it is never sent,
    /// whoever set it). Every response header is looked up in it.
    strip: NameSet,
    cookies: Option<CookiePolicy>,
    pub mask_errors: bool,
    /// Bytes to reserve for a response's HTTP/1.x lines, once: every line this policy can
    /// add, and room for the gateway's per-response ones after them.
    h1_lines_room: usize,
}

const HSTS: HeaderName = HeaderName::from_static("strict-transport-security");

impl HeaderPolicy {
    pub fn compile(
        cfg: &HeadersConfig,
        path: &KeyPath,
        diags: &mut Diagnostics,
    ) -> Option<HeaderPolicy> {
        let errors_before = diags.error_count();
        let Some(preset) = presets::find(&cfg.preset) else {
            let names: Vec<&str> = presets::PRESETS.iter().map(|p| p.name).collect();
            diags.error(
                path.key("preset"),
                format!(
                    "unknown preset `{}`; use one of: {}",
                    cfg.preset,
                    names.join(", ")
                ),
            );
            return None;
        };
        let mut set = Vec::new();
        let mut fill = Vec::new();
        for (n, v) in preset.set {
            set.push((HeaderName::from_static(n), HeaderValue::from_static(v)));
        }
        for (n, v) in preset.fill {
            fill.push((HeaderName::from_static(n), HeaderValue::from_static(v)));
        }

        // CSP: the preset's, replaced or turned off, then checked.
        let csp_text = match &cfg.csp {
            None => preset.csp.map(str::to_string),
            Some(ValueOrOff::Value(v)) => Some(v.clone()),
            Some(ValueOrOff::Off(false)) => None,
            Some(ValueOrOff::Off(true)) => {
                diags.error(
                    path.key("csp"),
                    "write the policy itself, or false to send none",
                );
                None
            }
        };
        if let Some(url) = &cfg.report_to {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                diags.error(
                    path.key("report_to"),
                    format!("`{url}` must be an http(s) URL"),
                );
            } else if let Some(v) =
                header_value(&format!("csp=\"{url}\""), &path.key("report_to"), diags)
            {
                set.push((HeaderName::from_static("reporting-endpoints"), v));
            }
            if csp_text.is_none() {
                diags.error(
                    path.key("report_to"),
                    "there is no CSP to report on (csp = false, or a preset without one)",
                );
            }
        }
        if let Some(mut text) = csp_text {
            let at = if cfg.csp.is_some() {
                path.key("csp")
            } else {
                path.key("preset")
            };
            let found = csp::check_csp(&text);
            for e in found.errors {
                diags.error(at.clone(), e);
            }
            for w in found.warnings {
                diags.warn(at.clone(), w);
            }
            if cfg.report_to.is_some() {
                text = format!("{}; report-to csp", text.trim_end().trim_end_matches(';'));
            }
            let csp_name = if cfg.csp_report_only {
                "content-security-policy-report-only"
            } else {
                "content-security-policy"
            };
            if let Some(v) = header_value(&text, &at, diags) {
                set.push((HeaderName::from_static(csp_name), v));
            }
        } else if cfg.csp_report_only {
            diags.error(
                path.key("csp_report_only"),
                "there is no CSP to send in report-only mode",
            );
        }

        let hsts = match &cfg.hsts {
            None => Some(preset.hsts.to_string()),
            Some(ValueOrOff::Value(v)) => Some(v.clone()),
            Some(ValueOrOff::Off(false)) => None,
            Some(ValueOrOff::Off(true)) => {
                diags.error(
                    path.key("hsts"),
                    "write the value itself, or false to send none",
                );
                None
            }
        }
        .and_then(|text| {
            let found = csp::check_hsts(&text);
            for e in found.errors {
                diags.error(path.key("hsts"), e);
            }
            for w in found.warnings {
                diags.warn(path.key("hsts"), w);
            }
            header_value(&text, &path.key("hsts"), diags)
        });

        if let Some(robots) = &cfg.robots {
            if let Some(v) = header_value(robots, &path.key("robots"), diags) {
                set.push((HeaderName::from_static("x-robots-tag"), v));
            }
        }
        if let Some(server) = &cfg.server {
            if let Some(v) = header_value(server, &path.key("server"), diags) {
                set.push((http::header::SERVER, v));
            }
        }

        let mut remove = HashSet::new();
        if cfg.strip_fingerprints {
            remove.extend(
                presets::FINGERPRINTS
                    .iter()
                    .map(|n| HeaderName::from_static(n)),
            );
        }
        for (i, n) in cfg.remove.iter().enumerate() {
            let at = path.key("remove").index(i);
            let Some(name) = header_name(n, &at, diags) else {
                continue;
            };
            // Pingora keeps these as it reads an upstream's response (they say where it ends
            // and whether its connection is reused), so no response loses them.
            if frames_the_response(&name) {
                diags.warn(
                    at,
                    format!("`{name}` frames the message or its connection and is never removed; this entry does nothing"),
                );
                continue;
            }
            remove.insert(name);
        }
        for (key, list, target) in [("set", &cfg.set, &mut set), ("fill", &cfg.fill, &mut fill)] {
            for (n, v) in list {
                let at = path.key(key).key(n);
                let (Some(name), Some(value)) =
                    (header_name(n, &at, diags), header_value(v, &at, diags))
                else {
                    continue;
                };
                if name == HSTS || name == http::header::CONTENT_SECURITY_POLICY {
                    diags.error(
                        at,
                        format!("set `{name}` with the `hsts` or `csp` key, where it is checked"),
                    );
                    continue;
                }
                if name.as_str().starts_with("access-control-") {
                    diags.error(
                        at,
                        format!("`{name}` comes from the route's `cors` policy ([cors.NAME]), which checks the origin; it cannot be set here"),
                    );
                    continue;
                }
                if FRAMING.contains(&name.as_str()) {
                    diags.error(
                        at,
                        format!("`{name}` is managed by the gateway and cannot be set here"),
                    );
                    continue;
                }
                if cfg.remove.iter().any(|r| r.eq_ignore_ascii_case(n)) {
                    diags.error(at, format!("`{n}` is both set and removed"));
                    continue;
                }
                // A later entry for the same header replaces the preset's.
                target.retain(|(existing, _)| *existing != name);
                target.push((name, value));
            }
        }
        // A header that is set is not also removed (e.g. `server = "..."`), nor filled: a set
        // header is always there, so its fill would never apply.
        remove.retain(|r| !set.iter().any(|(n, _)| n == r));
        fill.retain(|(f, _)| !set.iter().any(|(n, _)| n == f));

        let cookies = match &cfg.cookies {
            Some(ValueOrOff::Off(false)) => None,
            Some(ValueOrOff::Off(true)) => {
                diags.error(path.key("cookies"), "write a table such as { secure = true, http_only = true, same_site = \"Lax\" }, or false");
                None
            }
            Some(ValueOrOff::Value(c)) => compile_cookies(c, &path.key("cookies"), diags),
            None => compile_cookies(&CookiesConfig::default(), &path.key("cookies"), diags),
        };

        if diags.error_count() > errors_before {
            return None;
        }
        let has_csp = set
            .iter()
            .any(|(n, _)| n == http::header::CONTENT_SECURITY_POLICY);
        let strip = NameSet::new(
            remove
                .into_iter()
                .chain(set.iter().map(|(n, _)| n.clone()))
                .chain([HSTS]),
            if cfg.strip_fingerprints {
                presets::FINGERPRINT_PREFIXES
            } else {
                &[]
            }
            .iter()
            .copied(),
        );
        let set_https = FixedHeaders::new(
            set.iter()
                .cloned()
                .chain(hsts.iter().map(|v| (HSTS, v.clone()))),
        );
        let fill: Vec<(HeaderName, FixedHeaders)> = fill
            .into_iter()
            .map(|(n, v)| (n.clone(), FixedHeaders::new([(n, v)])))
            .collect();
        let h1_lines_room = set_https.lines_len()
            + fill.iter().map(|(_, f)| f.lines_len()).sum::<usize>()
            + PER_RESPONSE_LINES;
        Some(HeaderPolicy {
            set: FixedHeaders::new(set),
            set_https,
            fill,
            h1_lines_room,
            has_csp,
            hsts,
            strip,
            cookies,
            mask_errors: cfg.mask_errors,
        })
    }

    /// HSTS `max-age` in seconds, when the policy sends HSTS.
    pub fn hsts_max_age(&self) -> Option<u64> {
        let text = self.hsts.as_ref()?.to_str().ok()?.to_ascii_lowercase();
        text.split(';').find_map(|p| {
            p.trim()
                .strip_prefix("max-age=")?
                .trim_matches('"')
                .parse()
                .ok()
        })
    }

    /// Whether the policy sends a Content-Security-Policy (enforced, not report-only).
    pub fn has_csp(&self) -> bool {
        self.has_csp
    }

    /// Edits a response: strips fingerprints, sets and fills headers, HSTS over HTTPS only,
    /// hardens cookies. For the upstream's responses and the gateway's own alike.
    pub fn apply(
        &self,
        header: &mut ResponseHeader,
        https: bool,
        form: HeaderForm,
    ) -> pingora_error::Result<()> {
        self.apply_removing(header, https, form, |_| false)
    }

    /// The names of the response's own headers that [`Self::apply`] removes.
    pub fn strip(&self) -> &NameSet {
        &self.strip
    }

    /// [`Self::apply`], removing in the same walk the response's headers that `also` picks
    /// (the caller's own names to clear, which would otherwise take a second walk).
    pub fn apply_removing(
        &self,
        header: &mut ResponseHeader,
        https: bool,
        form: HeaderForm,
        also: impl Fn(&HeaderName) -> bool,
    ) -> pingora_error::Result<()> {
        // Walk the response's few headers rather than the long fingerprint list.
        remove_matching(header, |k| self.strip.contains(k) || also(k));
        self.apply_set(header, https, form)
    }

    /// [`Self::apply`] without the walk, for a response whose own headers were picked over
    /// already (an upstream's, as Pingora parsed it: see `Route::upstream_drop`).
    pub fn apply_set(
        &self,
        header: &mut ResponseHeader,
        https: bool,
        form: HeaderForm,
    ) -> pingora_error::Result<()> {
        if form == HeaderForm::H1Lines {
            header.reserve_h1_lines(self.h1_lines_room);
        }
        // RFC 6797 §7.2: HSTS never over plain HTTP.
        let set = if https { &self.set_https } else { &self.set };
        set.set(header, form)?;
        for (name, value) in &self.fill {
            if !header.headers.contains_key(name) {
                value.set(header, form)?;
            }
        }
        if let Some(cookies) = &self.cookies {
            if header.headers.contains_key(http::header::SET_COOKIE) {
                harden_cookies(header, cookies, https)?;
            }
        }
        Ok(())
    }
}

/// The first header name that `doomed` picks, to remove: called until `None`, it removes every
/// match without collecting them first. A message has a few headers and a match is rare, so
/// the rescans cost less than the `Vec` they replace, which was an allocation per message.
pub fn next_match(
    headers: &http::HeaderMap,
    doomed: impl Fn(&HeaderName) -> bool,
) -> Option<HeaderName> {
    headers.keys().find(|k| doomed(k)).cloned()
}

/// Removes every header of a response that `doomed` picks, with [`next_match`].
pub fn remove_matching(header: &mut ResponseHeader, doomed: impl Fn(&HeaderName) -> bool) {
    while let Some(name) = next_match(&header.headers, &doomed) {
        header.remove_header(&name);
    }
}

fn harden_cookies(
    header: &mut ResponseHeader,
    policy: &CookiePolicy,
    https: bool,
) -> pingora_error::Result<()> {
    let set_cookie = http::header::SET_COOKIE;
    let hardened: Vec<Option<HeaderValue>> = header
        .headers
        .get_all(&set_cookie)
        .iter()
        .map(|v| policy.harden(v, https))
        .collect();
    if hardened.iter().all(Option::is_none) {
        return Ok(());
    }
    let originals: Vec<HeaderValue> = header
        .headers
        .get_all(&set_cookie)
        .iter()
        .cloned()
        .collect();
    header.remove_header(&set_cookie);
    for (original, new) in originals.into_iter().zip(hardened) {
        header.append_header(set_cookie.clone(), new.unwrap_or(original))?;
    }
    Ok(())
}

fn compile_cookies(
    c: &CookiesConfig,
    path: &KeyPath,
    diags: &mut Diagnostics,
) -> Option<CookiePolicy> {
    let same_site = if c.same_site.eq_ignore_ascii_case("off") {
        None
    } else {
        match SameSite::parse(&c.same_site) {
            Some(s) => Some(s),
            None => {
                diags.error(
                    path.key("same_site"),
                    format!("`{}` is not Strict, Lax, None or off", c.same_site),
                );
                None
            }
        }
    };
    if same_site == Some(SameSite::None) && !c.secure {
        diags.error(
            path.key("same_site"),
            "SameSite=None needs secure = true: browsers refuse it otherwise",
        );
    }
    Some(CookiePolicy {
        secure: c.secure,
        http_only: c.http_only,
        same_site,
        exclude: c.exclude.clone(),
    })
}

fn header_name(text: &str, at: &KeyPath, diags: &mut Diagnostics) -> Option<HeaderName> {
    HeaderName::from_bytes(text.as_bytes())
        .map_err(|_| diags.error(at.clone(), format!("`{text}` is not a valid header name")))
        .ok()
}

fn header_value(text: &str, at: &KeyPath, diags: &mut Diagnostics) -> Option<HeaderValue> {
    let visible = text
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b));
    if !visible || text.trim() != text {
        diags.error(at.clone(), "a header value must be visible ASCII without leading or trailing spaces or line breaks");
        return None;
    }
    HeaderValue::from_str(text)
        .map_err(|_| diags.error(at.clone(), "not a valid header value"))
        .ok()
}

/// Every policy a route can name: the built-in presets by their own names, and the
/// `[headers.NAME]` tables.
pub fn compile_all(
    tables: &BTreeMap<String, HeadersConfig>,
    diags: &mut Diagnostics,
) -> BTreeMap<String, std::sync::Arc<HeaderPolicy>> {
    let mut out = BTreeMap::new();
    let root = KeyPath::root().key("headers");
    for preset in presets::PRESETS {
        if let Some(p) = HeaderPolicy::compile(&HeadersConfig::preset(preset.name), &root, diags) {
            out.insert(preset.name.to_string(), std::sync::Arc::new(p));
        }
    }
    for (name, cfg) in tables {
        let path = root.key(name);
        if presets::find(name).is_some() || name == "none" {
            diags.error(path, format!("`{name}` is a built-in name; choose another"));
            continue;
        }
        if let Some(p) = HeaderPolicy::compile(cfg, &path, diags) {
            out.insert(name.clone(), std::sync::Arc::new(p));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_http::ParsedHeaderName;

    fn compile(toml_text: &str) -> (Option<HeaderPolicy>, Diagnostics) {
        let cfg: HeadersConfig = toml::from_str(toml_text).unwrap();
        let mut d = Diagnostics::default();
        let p = HeaderPolicy::compile(&cfg, &KeyPath::root().key("headers").key("t"), &mut d);
        (p, d)
    }

    fn response(pairs: &[(&str, &str)]) -> ResponseHeader {
        let mut h = ResponseHeader::build(200, None).unwrap();
        for (n, v) in pairs {
            h.append_header(n.to_string(), *v).unwrap();
        }
        h
    }

    /// The HTTP/1.x bytes of a response's headers.
    fn wire(h: &ResponseHeader) -> String {
        let mut buf = Vec::new();
        h.header_to_h1_wire(&mut buf);
        String::from_utf8(buf).unwrap()
    }

    /// Pingora keeps a response's header values and their HTTP/1.x spellings in two maps
    /// walked in step; the vendored pingora-http's parsed insert must keep them so exactly
    /// as `insert_header` does: same bytes, replaced in place, app's case kept
    /// for what it is not replaced.
    #[test]
    fn a_parsed_insert_writes_the_same_bytes_as_insert_header() {
        let app = [
            ("x-request-id", "from-the-app"),
            ("Content-Type", "text/plain"),
            ("X-App-Thing", "kept"),
        ];
        let (mut by_name, mut parsed) = (response(&app), response(&app));
        for (name, value) in [
            (crate::respond::X_REQUEST_ID, "r-1"),
            (http::header::CONTENT_TYPE, "application/json"),
            (HeaderName::from_static("permissions-policy"), "camera=()"),
            (http::header::X_FRAME_OPTIONS, "DENY"),
        ] {
            by_name.insert_header(name.clone(), value).unwrap();
            parsed
                .insert_parsed_header(
                    &ParsedHeaderName::new(name),
                    HeaderValue::from_static(value),
                )
                .unwrap();
        }
        assert_eq!(wire(&parsed), wire(&by_name));
        assert_eq!(
            wire(&parsed),
            "x-request-id: r-1\r\nContent-Type: application/json\r\nX-App-Thing: kept\r\n\
             permissions-policy: camera=()\r\nx-frame-options: DENY\r\n"
        );
    }

    #[test]
    fn strict_api_sets_its_headers_strips_fingerprints_and_fills_cache_control() {
        let (p, _) = compile("preset = \"strict-api\"");
        let p = p.unwrap();
        let mut h = response(&[
            ("Server", "Werkzeug/2.0"),
            ("X-Powered-By", "Express"),
            ("X-Drupal-Cache", "HIT"),
            ("Cache-Control", "max-age=60"),
        ]);
        p.apply(&mut h, true, HeaderForm::Map).unwrap();
        assert!(h.headers.get("server").is_none());
        assert!(h.headers.get("x-powered-by").is_none());
        assert!(h.headers.get("x-drupal-cache").is_none());
        assert_eq!(
            h.headers["content-security-policy"],
            "default-src 'none'; frame-ancestors 'none'"
        );
        assert_eq!(
            h.headers["strict-transport-security"],
            "max-age=63072000; includeSubDomains"
        );
        assert_eq!(
            h.headers["cache-control"], "max-age=60",
            "fill never overrides the app"
        );
        assert_eq!(h.headers["x-frame-options"], "DENY");
    }

    /// The header lines of a response, sorted, names lowercased: what a client can tell.
    fn lines(h: &ResponseHeader) -> Vec<String> {
        let mut out: Vec<String> = wire(h)
            .lines()
            .map(|l| match l.split_once(':') {
                Some((n, v)) => format!("{}:{v}", n.to_ascii_lowercase()),
                None => l.to_string(),
            })
            .collect();
        out.sort();
        out
    }

    /// An HTTP/1.x client gets the fixed headers as ready-made lines, an HTTP/2 one in the
    /// map: what goes out must be the same, the app's own copies replaced in both.
    #[test]
    fn the_lines_form_sends_what_the_map_form_sends() {
        let app = [
            ("Server", "Werkzeug/2.0"),
            ("X-Frame-Options", "ALLOWALL"),
            ("Strict-Transport-Security", "max-age=1"),
            ("Content-Security-Policy", "default-src *"),
            ("Cache-Control", "max-age=60"),
            ("Set-Cookie", "a=1"),
            ("Content-Type", "text/plain"),
        ];
        for config in [
            "preset = \"strict-api\"",
            "preset = \"web-app\"\nserver = \"edge\"\nrobots = \"noindex\"",
            "preset = \"baseline\"\nhsts = false\nfill = { \"X-Extra\" = \"1\" }",
            // A set header its preset also fills, and a fill of a header the preset sets.
            "preset = \"strict-api\"\nset = { \"Cache-Control\" = \"public, max-age=60\" }\nfill = { \"X-Frame-Options\" = \"SAMEORIGIN\" }",
        ] {
            let p = compile(config).0.unwrap();
            for https in [true, false] {
                for upstream in [&app[..], &app[6..]] {
                    let (mut map, mut h1) = (response(upstream), response(upstream));
                    p.apply(&mut map, https, HeaderForm::Map).unwrap();
                    p.apply(&mut h1, https, HeaderForm::H1Lines).unwrap();
                    assert_eq!(lines(&h1), lines(&map), "{config} https={https}");
                    assert!(
                        !h1.h1_lines().is_empty(),
                        "{config}: the lines form is used"
                    );
                }
            }
        }
    }

    #[test]
    fn hsts_is_never_sent_over_plain_http_even_if_the_app_sent_it() {
        let (p, _) = compile("preset = \"baseline\"");
        let mut h = response(&[("Strict-Transport-Security", "max-age=1")]);
        p.unwrap().apply(&mut h, false, HeaderForm::Map).unwrap();
        assert!(h.headers.get("strict-transport-security").is_none());
    }

    #[test]
    fn set_overrides_the_preset_and_a_server_value_replaces_the_app_one() {
        let (p, _) = compile("preset = \"baseline\"\nserver = \"edge\"\nset = { \"X-Frame-Options\" = \"SAMEORIGIN\" }\nfill = { \"X-Extra\" = \"1\" }");
        let mut h = response(&[("Server", "nginx/1.2"), ("X-Extra", "app")]);
        p.unwrap().apply(&mut h, true, HeaderForm::Map).unwrap();
        assert_eq!(h.headers["server"], "edge");
        assert_eq!(h.headers["x-frame-options"], "SAMEORIGIN");
        assert_eq!(h.headers["x-extra"], "app");
    }

    #[test]
    fn report_only_and_report_to_rewrite_the_csp() {
        let (p, d) = compile("preset = \"strict-api\"\ncsp_report_only = true\nreport_to = \"https://r.example.com/csp\"");
        assert!(!d.has_errors(), "{d:?}");
        let mut h = response(&[]);
        p.unwrap().apply(&mut h, true, HeaderForm::Map).unwrap();
        assert!(h.headers.get("content-security-policy").is_none());
        assert_eq!(
            h.headers["content-security-policy-report-only"],
            "default-src 'none'; frame-ancestors 'none'; report-to csp"
        );
        assert_eq!(
            h.headers["reporting-endpoints"],
            "csp=\"https://r.example.com/csp\""
        );
    }

    #[test]
    fn bad_values_are_config_errors() {
        for bad in [
            "hsts = \"max-age=abc\"",
            "hsts = \"max-age=600; preload\"",
            "csp = \"\"",
            "preset = \"paranoid\"",
            "set = { \"Content-Length\" = \"5\" }",
            "set = { \"X-A\" = \"line\\nbreak\" }",
            "set = { \"Bad Name\" = \"x\" }",
            "hsts = true",
            "cookies = { same_site = \"Sometimes\" }",
            "set = { \"X-A\" = \"1\" }\nremove = [\"x-a\"]",
            "set = { \"Access-Control-Allow-Origin\" = \"*\" }",
            "fill = { \"RateLimit\" = \"x\" }",
        ] {
            let (p, d) = compile(bad);
            assert!(p.is_none() && d.has_errors(), "{bad} should be refused");
        }
    }

    #[test]
    fn removing_a_field_that_frames_the_message_is_a_warning_and_does_nothing() {
        let (p, d) = compile("remove = [\"Content-Length\", \"X-Internal\", \"connection\"]");
        let p = p.expect("a warning, not an error");
        let warned: Vec<String> = d
            .warnings()
            .map(|w| format!("{}: {}", w.path, w.reason))
            .collect();
        assert_eq!(warned.len(), 2, "{warned:?}");
        assert!(warned[0].contains("remove[0]") && warned[0].contains("content-length"));
        assert!(warned[1].contains("remove[2]") && warned[1].contains("connection"));
        assert!(p.strip().contains(&HeaderName::from_static("x-internal")));
        assert!(!p.strip().contains(&http::header::CONTENT_LENGTH));
        assert!(!p.strip().contains(&http::header::CONNECTION));
    }

    #[test]
    fn cookies_are_hardened_in_place_keeping_their_order() {
        let (p, _) = compile("preset = \"baseline\"");
        let mut h = response(&[
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2; Secure; HttpOnly; SameSite=Strict"),
        ]);
        p.unwrap().apply(&mut h, true, HeaderForm::Map).unwrap();
        let cookies: Vec<_> = h
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert_eq!(
            cookies,
            vec![
                "a=1; Secure; HttpOnly; SameSite=Lax",
                "b=2; Secure; HttpOnly; SameSite=Strict"
            ]
        );
    }
}
