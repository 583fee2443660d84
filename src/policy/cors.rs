//! `[cors.NAME]`: strict CORS. Origins are matched anchored (scheme, host and port), never as
//! substrings; preflights are answered by the gateway; the app's own `Access-Control-*`
//! headers are always replaced by the gateway's, so a legacy `*` cannot leak through.

use std::sync::LazyLock;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use pingora_http::{ParsedHeaderName, ResponseHeader};
use serde::Deserialize;

use crate::config::diagnostics::Diagnostics;
use crate::config::units::HumanDuration;
use crate::config::KeyPath;
use crate::policy::headers::{remove_matching, FixedHeaders, ResponseLines};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// `https://app.example.com`, `https://*.example.com`, or `*`. Required.
    pub allow_origins: Vec<String>,
    /// Default `["GET", "HEAD", "POST"]`.
    #[serde(default = "default_methods")]
    pub allow_methods: Vec<String>,
    /// Request headers a page may send. Default none.
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Response headers a page may read. Default none.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// Cookies and `Authorization` from the page. Default false.
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long browsers cache a preflight. Default `"10m"`.
    #[serde(default = "default_max_age")]
    pub max_age: HumanDuration,
}

fn default_methods() -> Vec<String> {
    vec!["GET".into(), "HEAD".into(), "POST".into()]
}
fn default_max_age() -> HumanDuration {
    HumanDuration(Duration::from_secs(600))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum OriginRule {
    Exact(Origin),
    /// `https://*.example.com`: one or more labels before `.example.com`.
    Wildcard {
        scheme: String,
        suffix: String,
        port: u16,
    },
}

/// A parsed `scheme://host[:port]`, lowercased, with the scheme's default port filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    fn parse(text: &str) -> Option<Origin> {
        let lower = text.trim().to_ascii_lowercase();
        let (scheme, rest) = lower.split_once("://")?;
        let default_port = match scheme {
            "https" => 443,
            "http" => 80,
            _ => return None,
        };
        if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
            return None;
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => {
                (h, p.parse::<u16>().ok()?)
            }
            _ => (rest, default_port),
        };
        let valid = !host.is_empty()
            && host.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'*' | b'[' | b']' | b':')
            });
        valid.then(|| Origin {
            scheme: scheme.to_string(),
            host: host.to_string(),
            port,
        })
    }
}

impl OriginRule {
    fn parse(text: &str) -> Result<OriginRule, String> {
        let origin = Origin::parse(text).ok_or_else(|| {
            format!("`{text}` is not an origin like \"https://app.example.com\" or \"https://*.example.com\"")
        })?;
        match origin.host.strip_prefix("*.") {
            Some(suffix) if !suffix.is_empty() && !suffix.contains('*') && suffix.contains('.') => Ok(OriginRule::Wildcard {
                scheme: origin.scheme,
                suffix: format!(".{suffix}"),
                port: origin.port,
            }),
            _ if origin.host.contains('*') => Err(format!(
                "`{text}`: a wildcard must be the first label of a domain with a dot, like https://*.example.com"
            )),
            _ => Ok(OriginRule::Exact(origin)),
        }
    }

    fn matches(&self, origin: &Origin) -> bool {
        match self {
            OriginRule::Exact(o) => o == origin,
            OriginRule::Wildcard {
                scheme,
                suffix,
                port,
            } => {
                *scheme == origin.scheme
                    && *port == origin.port
                    && origin.host.len() > suffix.len()
                    && origin.host.ends_with(suffix.as_str())
            }
        }
    }
}

pub struct CorsPolicy {
    any_origin: bool,
    origins: Vec<OriginRule>,
    /// The exact origins as a browser writes them (`https://app.example.com`, with and
    /// without the default port), compared before anything is parsed; each with what a
    /// response to it gets, made at load: `Access-Control-Allow-Origin` naming it, then
    /// `allowed`'s headers.
    exact: Vec<(String, FixedHeaders)>,
    /// What every response gets when any origin is allowed without credentials
    /// (`Access-Control-Allow-Origin: *`, then `allowed`'s headers).
    star: FixedHeaders,
    methods: Vec<Method>,
    allow_methods: HeaderValue,
    allow_headers: Vec<String>,
    allow_headers_value: Option<HeaderValue>,
    credentials: bool,
    max_age: HeaderValue,
    /// `Vary: Origin`, when the answer depends on the origin.
    vary: FixedHeaders,
    /// What an allowed origin gets besides `Access-Control-Allow-Origin`: credentials and
    /// the exposed headers.
    allowed: FixedHeaders,
}

/// Why a preflight was refused (the gateway answers 403 without CORS headers).
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Origin,
    Method,
    Header(String),
}

const ACAO: HeaderName = HeaderName::from_static("access-control-allow-origin");
const ACAC: HeaderName = HeaderName::from_static("access-control-allow-credentials");
const ACAM: HeaderName = HeaderName::from_static("access-control-allow-methods");
const ACAH: HeaderName = HeaderName::from_static("access-control-allow-headers");
const ACEH: HeaderName = HeaderName::from_static("access-control-expose-headers");
// Parsed once, for the inserts on every response.
static ACAO_NAME: LazyLock<ParsedHeaderName> = LazyLock::new(|| ParsedHeaderName::new(ACAO));
const ACMA: HeaderName = HeaderName::from_static("access-control-max-age");
pub const ACRM: HeaderName = HeaderName::from_static("access-control-request-method");
const ACRH: HeaderName = HeaderName::from_static("access-control-request-headers");

impl CorsPolicy {
    pub fn compile(name: &str, cfg: &CorsConfig, diags: &mut Diagnostics) -> Option<CorsPolicy> {
        let path = KeyPath::root().key("cors").key(name);
        let before = diags.error_count();
        let any_origin = cfg.allow_origins.iter().any(|o| o == "*");
        if cfg.allow_origins.is_empty() {
            diags.error(path.key("allow_origins"), "needs at least one origin");
        }
        if any_origin && cfg.allow_credentials {
            diags.error(
                path.key("allow_credentials"),
                "allow_origins = [\"*\"] with allow_credentials = true would let any site act with the user's cookies; list the origins",
            );
        } else if any_origin {
            diags.warn(
                path.key("allow_origins"),
                "`*` lets any site read these responses",
            );
        }
        let mut origins = Vec::new();
        for (i, o) in cfg
            .allow_origins
            .iter()
            .enumerate()
            .filter(|(_, o)| *o != "*")
        {
            match OriginRule::parse(o) {
                Ok(rule) => origins.push(rule),
                Err(e) => diags.error(path.key("allow_origins").index(i), e),
            }
        }
        let mut methods = Vec::new();
        for (i, m) in cfg.allow_methods.iter().enumerate() {
            match Method::from_bytes(m.as_bytes()) {
                Ok(method) if m.bytes().all(|b| b.is_ascii_uppercase()) => methods.push(method),
                _ => diags.error(
                    path.key("allow_methods").index(i),
                    format!("`{m}` is not a method name in capitals"),
                ),
            }
        }
        let mut names = |key: &str, list: &[String]| -> Vec<String> {
            let mut out = Vec::new();
            for (i, h) in list.iter().enumerate() {
                match HeaderName::from_bytes(h.as_bytes()) {
                    Ok(n) => out.push(n.as_str().to_string()),
                    Err(_) => diags.error(
                        path.key(key).index(i),
                        format!("`{h}` is not a header name"),
                    ),
                }
            }
            out
        };
        let allow_headers = names("allow_headers", &cfg.allow_headers);
        let expose_headers = names("expose_headers", &cfg.expose_headers);
        if diags.error_count() > before {
            return None;
        }
        let join = |list: &[String]| {
            (!list.is_empty())
                .then(|| HeaderValue::from_str(&list.join(", ")).ok())
                .flatten()
        };
        let method_names: Vec<String> = methods.iter().map(|m| m.to_string()).collect();
        let credentials = cfg.allow_credentials;
        let depends_on_origin = !any_origin || credentials;
        let vary =
            depends_on_origin.then_some((http::header::VARY, HeaderValue::from_static("Origin")));
        let allowed: Vec<(HeaderName, HeaderValue)> = credentials
            .then(|| (ACAC, HeaderValue::from_static("true")))
            .into_iter()
            .chain(join(&expose_headers).map(|v| (ACEH, v)))
            .collect();
        let answer = |origin: HeaderValue| {
            FixedHeaders::new([(ACAO, origin)].into_iter().chain(allowed.iter().cloned()))
        };
        let exact = origins
            .iter()
            .filter_map(|r| match r {
                OriginRule::Exact(o) => Some(o),
                OriginRule::Wildcard { .. } => None,
            })
            .flat_map(|o| {
                let default_port =
                    (o.scheme == "https" && o.port == 443) || (o.scheme == "http" && o.port == 80);
                let short = default_port.then(|| format!("{}://{}", o.scheme, o.host));
                short
                    .into_iter()
                    .chain([format!("{}://{}:{}", o.scheme, o.host, o.port)])
            })
            .filter_map(|text| {
                let value = HeaderValue::from_str(&text).ok()?;
                Some((text, answer(value)))
            })
            .collect();
        Some(CorsPolicy {
            any_origin,
            origins,
            exact,
            star: answer(HeaderValue::from_static("*")),
            allow_methods: join(&method_names)?,
            methods,
            allow_headers_value: join(&allow_headers),
            allow_headers,
            credentials,
            max_age: HeaderValue::from(cfg.max_age.0.as_secs()),
            vary: FixedHeaders::new(vary),
            allowed: FixedHeaders::new(allowed),
        })
    }

    fn allows_origin(&self, origin: &HeaderValue) -> bool {
        if self.any_origin {
            return true;
        }
        let bytes = origin.as_bytes();
        if self
            .exact
            .iter()
            .any(|(t, _)| t.as_bytes().eq_ignore_ascii_case(bytes))
        {
            return true;
        }
        let Some(parsed) = origin.to_str().ok().and_then(Origin::parse) else {
            return false;
        };
        self.origins.iter().any(|r| r.matches(&parsed))
    }

    /// The `Access-Control-Allow-Origin` value for an allowed origin.
    fn allow_origin_value(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any_origin && !self.credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    /// Answers a preflight: the headers of the 204, or why it is refused.
    pub fn preflight(
        &self,
        origin: &HeaderValue,
        headers: &http::HeaderMap,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, Refusal> {
        if !self.allows_origin(origin) {
            return Err(Refusal::Origin);
        }
        let method = headers
            .get(&ACRM)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .ok_or(Refusal::Method)?;
        if !self.methods.contains(&method) {
            return Err(Refusal::Method);
        }
        for value in headers.get_all(&ACRH) {
            for requested in value.to_str().unwrap_or_default().split(',') {
                let requested = requested.trim().to_ascii_lowercase();
                if !requested.is_empty() && !self.allow_headers.contains(&requested) {
                    return Err(Refusal::Header(requested));
                }
            }
        }
        let mut out = vec![
            (ACAO, self.allow_origin_value(origin)),
            (ACAM, self.allow_methods.clone()),
            (ACMA, self.max_age.clone()),
            (
                http::header::VARY,
                HeaderValue::from_static(
                    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
                ),
            ),
        ];
        if let Some(h) = &self.allow_headers_value {
            out.push((ACAH, h.clone()));
        }
        if self.credentials {
            out.push((ACAC, HeaderValue::from_static("true")));
        }
        Ok(out)
    }

    /// The start of the names of the app's headers that [`Self::apply`] removes.
    pub const OWN_PREFIX: &'static str = "access-control-";

    /// Edits an actual response: the app's `Access-Control-*` headers go (unless `own_gone`
    /// says they are gone already: an upstream's response parsed without them), the
    /// gateway's come for an allowed origin, and `Vary: Origin` whenever the answer depends
    /// on the origin.
    pub fn apply(
        &self,
        header: &mut ResponseHeader,
        origin: Option<&HeaderValue>,
        lines: &mut ResponseLines,
        own_gone: bool,
    ) -> pingora_error::Result<()> {
        let form = lines.form();
        if !own_gone {
            remove_matching(header, |k| k.as_str().starts_with(Self::OWN_PREFIX));
        }
        self.vary.append(header, form)?;
        let Some(origin) = origin else {
            return Ok(());
        };
        // The usual cases, answered with headers made at load: any origin (`*`), or an
        // allowed one written as the config's (the echo is then those very bytes).
        if self.any_origin && !self.credentials {
            return self.star.set(header, form);
        }
        let written = origin.as_bytes();
        if let Some((_, answer)) = self.exact.iter().find(|(t, _)| t.as_bytes() == written) {
            return answer.set(header, form);
        }
        if !self.allows_origin(origin) {
            return Ok(());
        }
        // The app's `Access-Control-*` are gone: nothing of these names is left to replace.
        lines.set(header, &ACAO_NAME, &self.allow_origin_value(origin))?;
        self.allowed.set(header, form)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: &[&str], credentials: bool) -> CorsPolicy {
        let cfg = CorsConfig {
            allow_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["Content-Type".into(), "X-API-Key".into()],
            expose_headers: vec!["X-Request-Id".into()],
            allow_credentials: credentials,
            max_age: default_max_age(),
        };
        let mut d = Diagnostics::default();
        CorsPolicy::compile("site", &cfg, &mut d).expect("valid")
    }

    fn allows(p: &CorsPolicy, origin: &str) -> bool {
        p.allows_origin(&HeaderValue::from_str(origin).unwrap())
    }

    #[test]
    fn matching_is_anchored_on_scheme_host_and_port() {
        let p = policy(&["https://app.example.com", "https://*.example.org"], true);
        assert!(allows(&p, "https://app.example.com"));
        assert!(allows(&p, "https://APP.example.com:443"));
        assert!(!allows(&p, "https://app.example.com.evil.com"));
        assert!(!allows(&p, "https://evilapp.example.com"));
        assert!(!allows(&p, "http://app.example.com"));
        assert!(!allows(&p, "https://app.example.com:8443"));
        assert!(allows(&p, "https://a.example.org"));
        assert!(allows(&p, "https://a.b.example.org"));
        assert!(!allows(&p, "https://example.org"));
        assert!(!allows(&p, "https://evilexample.org"));
        assert!(!allows(&p, "null"));
        assert!(!allows(&p, "https://app.example.com/path"));
    }

    #[test]
    fn star_with_credentials_is_refused_naming_both_keys() {
        let cfg = CorsConfig {
            allow_origins: vec!["*".into()],
            allow_methods: default_methods(),
            allow_headers: vec![],
            expose_headers: vec![],
            allow_credentials: true,
            max_age: default_max_age(),
        };
        let mut d = Diagnostics::default();
        assert!(CorsPolicy::compile("x", &cfg, &mut d).is_none());
        assert!(
            d.list[0].reason.contains("allow_origins")
                && d.list[0].reason.contains("allow_credentials")
        );
    }

    #[test]
    fn bad_origins_are_refused() {
        for bad in [
            "app.example.com",
            "ftp://a.com",
            "https://a.*.com",
            "https://*",
            "https://a.com/x",
        ] {
            assert!(OriginRule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn preflights_check_method_and_every_requested_header() {
        let p = policy(&["https://app.example.com"], false);
        let origin = HeaderValue::from_static("https://app.example.com");
        let mut h = http::HeaderMap::new();
        h.insert(ACRM, HeaderValue::from_static("POST"));
        h.insert(ACRH, HeaderValue::from_static("content-type, X-API-Key"));
        assert!(p.preflight(&origin, &h).is_ok());
        h.insert(ACRH, HeaderValue::from_static("content-type, x-admin"));
        assert_eq!(
            p.preflight(&origin, &h),
            Err(Refusal::Header("x-admin".into()))
        );
        h.remove(ACRH);
        h.insert(ACRM, HeaderValue::from_static("DELETE"));
        assert_eq!(p.preflight(&origin, &h), Err(Refusal::Method));
        let evil = HeaderValue::from_static("https://evil.com");
        assert_eq!(p.preflight(&evil, &h), Err(Refusal::Origin));
    }

    proptest::proptest! {
        #[test]
        fn an_origin_only_matches_itself_or_its_subdomains(
            label in "[a-z][a-z0-9-]{0,10}",
            tail in "[a-z0-9.-]{1,15}",
        ) {
            let p = policy(&["https://app.example.com", "https://*.example.org"], true);
            // Anything appended after the allowed host is another host.
            let evil = format!("https://app.example.com{tail}");
            proptest::prop_assert!(!allows(&p, &evil) || tail.is_empty(), "{}", evil);
            let evil = format!("https://{label}.example.org.{tail}");
            proptest::prop_assert!(!allows(&p, &evil), "{}", evil);
            let good = format!("https://{label}.example.org");
            proptest::prop_assert!(allows(&p, &good), "{}", good);
        }
    }
}
