//! `[[static]]`: small fixed responses at exact paths (`/.well-known/security.txt`,
//! `/robots.txt`), answered by the gateway before routing.

use bytes::Bytes;
use http::HeaderValue;
use serde::Deserialize;

use crate::config::diagnostics::Diagnostics;
use crate::config::KeyPath;
use crate::router::HostMatch;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    /// Exact path. Required.
    pub path: String,
    /// Exact host or `*.example.com`. Default: any host.
    pub host: Option<String>,
    /// Default `"text/plain; charset=utf-8"`.
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// The response body, at most 64 KiB. Required.
    pub body: String,
}

fn default_content_type() -> String {
    "text/plain; charset=utf-8".into()
}

const MAX_BODY: usize = 64 * 1024;

pub struct StaticResponse {
    path: String,
    host: HostMatch,
    pub content_type: HeaderValue,
    pub body: Bytes,
}

#[derive(Default)]
pub struct Statics {
    list: Vec<StaticResponse>,
}

impl Statics {
    pub fn compile(list: &[StaticConfig], diags: &mut Diagnostics) -> Statics {
        let root = KeyPath::root().key("static");
        let mut out: Vec<StaticResponse> = Vec::new();
        for (i, s) in list.iter().enumerate() {
            let path = root.index(i);
            let errors_before = diags.error_count();
            if !s.path.starts_with('/') || s.path.contains(['?', '#', ' ']) {
                diags.error(
                    path.key("path"),
                    format!("`{}` must be a plain path starting with `/`", s.path),
                );
            }
            let host = match s.host.as_deref().map(HostMatch::parse) {
                None => HostMatch::Any,
                Some(Ok(h)) => h,
                Some(Err(e)) => {
                    diags.error(path.key("host"), e);
                    HostMatch::Any
                }
            };
            let content_type = HeaderValue::from_str(&s.content_type).ok();
            if content_type.is_none() {
                diags.error(path.key("content_type"), "not a valid header value");
            }
            if s.body.len() > MAX_BODY {
                diags.error(
                    path.key("body"),
                    format!(
                        "{} bytes is over the 64 KiB a fixed response may hold",
                        s.body.len()
                    ),
                );
            }
            if s.path.ends_with("/security.txt") {
                check_security_txt(&s.body, &s.path, &path, diags);
            }
            if out.iter().any(|o| o.path == s.path && o.host == host) {
                diags.error(path.key("path"), format!("`{}` is served twice", s.path));
            }
            if diags.error_count() > errors_before {
                continue;
            }
            if let Some(content_type) = content_type {
                out.push(StaticResponse {
                    path: s.path.clone(),
                    host,
                    content_type,
                    body: Bytes::from(s.body.clone()),
                });
            }
        }
        // An exact host first, then a wildcard, then any host.
        out.sort_by_key(|s| match s.host {
            HostMatch::Exact(_) => 0,
            HostMatch::Suffix(_) => 1,
            HostMatch::Any => 2,
        });
        Statics { list: out }
    }

    pub fn find(&self, host: &str, path: &str) -> Option<&StaticResponse> {
        self.list
            .iter()
            .find(|s| s.path == path && s.host.matches(host))
    }
}

/// RFC 9116: `Contact` and `Expires` are required; `Expires` is an RFC 3339 time.
fn check_security_txt(body: &str, written_path: &str, path: &KeyPath, diags: &mut Diagnostics) {
    let field = |name: &str| {
        body.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    if field("Contact").is_none() {
        diags.error(
            path.key("body"),
            "security.txt needs a `Contact:` line (RFC 9116)",
        );
    }
    match field("Expires") {
        None => diags.error(
            path.key("body"),
            "security.txt needs an `Expires:` line (RFC 9116)",
        ),
        Some(when) => match humantime::parse_rfc3339_weak(&when) {
            Err(_) => diags.error(
                path.key("body"),
                format!("Expires `{when}` is not an RFC 3339 time like 2027-12-31T23:59:59Z"),
            ),
            Ok(t) if t < std::time::SystemTime::now() => {
                diags.warn(path.key("body"), format!("security.txt expired on {when}"))
            }
            Ok(_) => {}
        },
    }
    if written_path != "/.well-known/security.txt" {
        diags.warn(
            path.key("path"),
            "RFC 9116 places security.txt at /.well-known/security.txt",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(path: &str, body: &str) -> Diagnostics {
        let mut d = Diagnostics::default();
        Statics::compile(
            &[StaticConfig {
                path: path.into(),
                host: None,
                content_type: default_content_type(),
                body: body.into(),
            }],
            &mut d,
        );
        d
    }

    #[test]
    fn security_txt_needs_contact_and_expires() {
        assert_eq!(
            compile(
                "/.well-known/security.txt",
                "Expires: 2099-01-01T00:00:00Z\n"
            )
            .error_count(),
            1
        );
        assert_eq!(
            compile(
                "/.well-known/security.txt",
                "Contact: mailto:s@example.com\n"
            )
            .error_count(),
            1
        );
        assert_eq!(
            compile("/.well-known/security.txt", "Contact: x\nExpires: soon\n").error_count(),
            1
        );
        let ok = compile(
            "/.well-known/security.txt",
            "Contact: mailto:s@example.com\nExpires: 2099-01-01T00:00:00Z\n",
        );
        assert_eq!(ok.list.len(), 0, "{ok:?}");
    }

    #[test]
    fn other_paths_take_any_body() {
        assert_eq!(
            compile("/robots.txt", "User-agent: *\nDisallow: /\n")
                .list
                .len(),
            0
        );
    }
}
