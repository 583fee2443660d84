//! Hardens the upstream's `Set-Cookie` headers: adds `Secure` (over HTTPS), `HttpOnly` and
//! `SameSite` when the app left them out, never duplicating an attribute it set.

use http::HeaderValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

impl SameSite {
    pub fn parse(text: &str) -> Option<SameSite> {
        match text.to_ascii_lowercase().as_str() {
            "strict" => Some(SameSite::Strict),
            "lax" => Some(SameSite::Lax),
            "none" => Some(SameSite::None),
            _ => None,
        }
    }

    fn attribute(self) -> &'static str {
        match self {
            SameSite::Strict => "SameSite=Strict",
            SameSite::Lax => "SameSite=Lax",
            SameSite::None => "SameSite=None",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CookiePolicy {
    pub secure: bool,
    pub http_only: bool,
    pub same_site: Option<SameSite>,
    /// Cookie names left as the app sent them (e.g. ones scripts must read).
    pub exclude: Vec<String>,
}

impl CookiePolicy {
    /// The hardened header, or `None` when nothing needs to change.
    pub fn harden(&self, set_cookie: &HeaderValue, https: bool) -> Option<HeaderValue> {
        // Bytes, not str: a cookie value may hold any octet (`sid=Jürgen`), and it still gets
        // its flags.
        let bytes = set_cookie.as_bytes();
        let mut parts = bytes.split(|b| *b == b';');
        let first = parts.next()?;
        let name = first.split(|b| *b == b'=').next()?.trim_ascii();
        if self.exclude.iter().any(|e| e.as_bytes() == name) {
            return None;
        }
        let (mut has_secure, mut has_http_only, mut has_same_site) = (false, false, false);
        for attr in parts {
            let key = attr
                .split(|b| *b == b'=')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            if key.eq_ignore_ascii_case(b"secure") {
                has_secure = true;
            } else if key.eq_ignore_ascii_case(b"httponly") {
                has_http_only = true;
            } else if key.eq_ignore_ascii_case(b"samesite") {
                has_same_site = true;
            }
        }
        // Browsers refuse __Secure- and __Host- cookies without Secure: the prefix asks for it.
        let prefixed = name.starts_with(b"__Secure-") || name.starts_with(b"__Host-");
        let mut extra = String::new();
        if !has_secure && https && (self.secure || prefixed) {
            extra.push_str("; Secure");
        }
        if !has_http_only && self.http_only {
            extra.push_str("; HttpOnly");
        }
        if !has_same_site {
            if let Some(same_site) = self.same_site {
                // SameSite=None without Secure is refused by browsers: only add it over HTTPS.
                if same_site != SameSite::None || https {
                    extra.push_str("; ");
                    extra.push_str(same_site.attribute());
                }
            }
        }
        if extra.is_empty() {
            return None;
        }
        let mut value = bytes.trim_ascii_end().to_vec();
        while value.last() == Some(&b';') {
            value.pop();
        }
        value.extend_from_slice(extra.as_bytes());
        HeaderValue::from_bytes(&value).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CookiePolicy {
        CookiePolicy {
            secure: true,
            http_only: true,
            same_site: Some(SameSite::Lax),
            exclude: vec!["csrf_token".into()],
        }
    }

    fn harden(v: &str, https: bool) -> Option<String> {
        policy()
            .harden(&HeaderValue::from_str(v).unwrap(), https)
            .map(|h| h.to_str().unwrap().to_string())
    }

    #[test]
    fn a_bare_cookie_gets_every_flag_over_https() {
        assert_eq!(
            harden("session=abc", true).as_deref(),
            Some("session=abc; Secure; HttpOnly; SameSite=Lax")
        );
    }

    #[test]
    fn secure_is_not_added_over_plain_http() {
        assert_eq!(
            harden("session=abc; Path=/", false).as_deref(),
            Some("session=abc; Path=/; HttpOnly; SameSite=Lax")
        );
    }

    #[test]
    fn attributes_the_app_set_are_kept_and_not_duplicated() {
        assert_eq!(harden("s=1; secure; HTTPONLY; SameSite=Strict", true), None);
        assert_eq!(
            harden("s=1; Path=/; samesite=none; Secure;", true).as_deref(),
            Some("s=1; Path=/; samesite=none; Secure; HttpOnly")
        );
    }

    #[test]
    fn excluded_cookies_are_left_alone() {
        assert_eq!(harden("csrf_token=xyz", true), None);
    }

    #[test]
    fn prefixed_cookies_get_secure_even_when_the_policy_does_not_ask() {
        let p = CookiePolicy {
            secure: false,
            http_only: false,
            same_site: None,
            exclude: vec![],
        };
        let out = p
            .harden(&HeaderValue::from_static("__Host-id=1; Path=/"), true)
            .unwrap();
        assert_eq!(out, "__Host-id=1; Path=/; Secure");
        assert_eq!(p.harden(&HeaderValue::from_static("plain=1"), true), None);
    }

    #[test]
    fn samesite_none_is_only_added_over_https() {
        let p = CookiePolicy {
            secure: false,
            http_only: false,
            same_site: Some(SameSite::None),
            exclude: vec![],
        };
        assert_eq!(p.harden(&HeaderValue::from_static("a=1"), false), None);
        assert_eq!(
            p.harden(&HeaderValue::from_static("a=1"), true).unwrap(),
            "a=1; SameSite=None"
        );
    }

    #[test]
    fn cookies_with_non_ascii_bytes_still_get_their_flags() {
        let value = HeaderValue::from_bytes("sid=Jürgen; Path=/".as_bytes()).unwrap();
        let out = policy().harden(&value, true).unwrap();
        assert_eq!(
            out.as_bytes(),
            "sid=Jürgen; Path=/; Secure; HttpOnly; SameSite=Lax".as_bytes()
        );
    }
}
