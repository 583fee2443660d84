//! Host and path-prefix matching. The most specific route wins: an exact host before a wildcard
//! host before any host, then the longest path prefix. Prefixes match on segment boundaries:
//! `/api` matches `/api` and `/api/x`, never `/apix`.

use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    Any,
    Exact(String),
    /// `*.example.com`, stored as `.example.com`: one or more labels before the suffix.
    Suffix(String),
}

impl HostMatch {
    /// Parses a route's `host`. Hosts are compared lowercased and without a port.
    pub fn parse(text: &str) -> Result<HostMatch, String> {
        let host = text.trim().to_ascii_lowercase();
        let (wild, name) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host.as_str()),
        };
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if name.is_empty() || !name.split('.').all(valid_label) {
            return Err(format!(
                "`{text}` is not a host name: use an exact name or a wildcard like `*.example.com`"
            ));
        }
        Ok(if wild {
            HostMatch::Suffix(format!(".{name}"))
        } else {
            HostMatch::Exact(name.to_string())
        })
    }

    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(name) => name == host,
            HostMatch::Suffix(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        }
    }

    /// Higher is more specific.
    fn rank(&self) -> (u8, usize) {
        match self {
            HostMatch::Exact(name) => (2, name.len()),
            HostMatch::Suffix(suffix) => (1, suffix.len()),
            HostMatch::Any => (0, 0),
        }
    }
}

/// A route's path prefix, normalised so that `/api/` and `/api` mean the same.
pub fn normalize_prefix(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!("`{text}` must start with `/`"));
    }
    if text.contains(['?', '#']) || text.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!(
            "`{text}` must be a plain path: no query, fragment, spaces or control characters"
        ));
    }
    let trimmed = text.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    })
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Anything a route table can hold: the router only needs where it matches.
pub trait Matchable {
    fn host(&self) -> &HostMatch;
    fn prefix(&self) -> &str;
}

/// Routes in match order, most specific first.
pub struct Router<R> {
    routes: Vec<Arc<R>>,
}

impl<R: Matchable> Router<R> {
    pub fn new(mut routes: Vec<Arc<R>>) -> Self {
        // Stable sort: among equally specific routes, the one written first wins.
        routes.sort_by(|a, b| {
            let ka = (a.host().rank(), a.prefix().len());
            let kb = (b.host().rank(), b.prefix().len());
            kb.cmp(&ka)
        });
        Router { routes }
    }

    /// `host` must already be lowercased and stripped of its port.
    pub fn find(&self, host: &str, path: &str) -> Option<&Arc<R>> {
        self.routes.get(self.find_index(host, path)?)
    }

    /// The position in [`Self::routes`] of the route [`Self::find`] finds.
    pub fn find_index(&self, host: &str, path: &str) -> Option<usize> {
        self.routes
            .iter()
            .position(|r| r.host().matches(host) && prefix_matches(r.prefix(), path))
    }

    /// The routes, most specific first.
    pub fn routes(&self) -> &[Arc<R>] {
        &self.routes
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<R>> {
        self.routes.iter()
    }
}

/// The host a request names in `raw` (its `Host` or `:authority`): lowercased, without its
/// port or a trailing dot, an IPv6 address without its brackets. `None` when `raw` is not a
/// host the gateway routes on: a name of letters, digits, `-`, `.`, `_` and `~`, an IPv4
/// address, or an IPv6 address in brackets, each with an optional port of digits. Stricter
/// than RFC 3986's reg-name, whose sub-delims and percent-escapes no DNS name has: a `Host`
/// with quotes, spaces, slashes or angle brackets is an attempt on whatever builds links from
/// it, not a site's name. One pass over the bytes, on every request.
pub fn request_host(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let name = if let Some(rest) = raw.strip_prefix('[') {
        let (literal, after) = rest.split_once(']')?;
        let address = !literal.is_empty()
            && literal
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        let port_ok = match after.strip_prefix(':') {
            Some(port) => port.bytes().all(|b| b.is_ascii_digit()),
            None => after.is_empty(),
        };
        if !(address && port_ok) {
            return None;
        }
        literal
    } else {
        let mut end = bytes.len();
        for (i, &b) in bytes.iter().enumerate() {
            if HOST_BYTES[usize::from(b)] {
                continue;
            }
            if b == b':' && bytes[i + 1..].iter().all(u8::is_ascii_digit) {
                end = i;
                break;
            }
            return None;
        }
        raw[..end].trim_end_matches('.')
    };
    (!name.is_empty()).then(|| name.to_ascii_lowercase())
}

/// The bytes of a host name (see [`request_host`]).
const HOST_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~');
        b += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    struct R {
        name: &'static str,
        host: HostMatch,
        prefix: String,
    }
    impl Matchable for R {
        fn host(&self) -> &HostMatch {
            &self.host
        }
        fn prefix(&self) -> &str {
            &self.prefix
        }
    }

    fn route(name: &'static str, host: Option<&str>, path: &str) -> Arc<R> {
        Arc::new(R {
            name,
            host: host.map_or(HostMatch::Any, |h| HostMatch::parse(h).unwrap()),
            prefix: normalize_prefix(path).unwrap(),
        })
    }

    fn find(router: &Router<R>, host: &str, path: &str) -> Option<&'static str> {
        router.find(host, path).map(|r| r.name)
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        let router = Router::new(vec![route("api", None, "/api")]);
        assert_eq!(find(&router, "h", "/api"), Some("api"));
        assert_eq!(find(&router, "h", "/api/"), Some("api"));
        assert_eq!(find(&router, "h", "/api/jobs"), Some("api"));
        assert_eq!(find(&router, "h", "/apix"), None);
        assert_eq!(find(&router, "h", "/"), None);
    }

    #[test]
    fn the_longest_prefix_wins_whatever_the_order_written() {
        let router = Router::new(vec![
            route("root", None, "/"),
            route("jobs", None, "/api/jobs/"),
            route("api", None, "/api"),
        ]);
        assert_eq!(find(&router, "h", "/api/jobs/1"), Some("jobs"));
        assert_eq!(find(&router, "h", "/api/other"), Some("api"));
        assert_eq!(find(&router, "h", "/else"), Some("root"));
    }

    #[test]
    fn exact_hosts_beat_wildcards_which_beat_any_host() {
        let router = Router::new(vec![
            route("any", None, "/"),
            route("wild", Some("*.example.com"), "/"),
            route("exact", Some("api.example.com"), "/"),
        ]);
        assert_eq!(find(&router, "api.example.com", "/x"), Some("exact"));
        assert_eq!(find(&router, "a.b.example.com", "/x"), Some("wild"));
        assert_eq!(find(&router, "example.com", "/x"), Some("any"));
        assert_eq!(find(&router, "evilexample.com", "/x"), Some("any"));
    }

    #[test]
    fn hosts_are_names_or_addresses_with_a_port() {
        for (raw, host) in [
            ("example.com", "example.com"),
            ("API.Example.com:8443", "api.example.com"),
            ("example.com.", "example.com"),
            ("example.com:", "example.com"),
            ("127.0.0.1", "127.0.0.1"),
            ("127.0.0.1:8080", "127.0.0.1"),
            ("[::1]", "::1"),
            ("[::1]:8080", "::1"),
            ("[2001:DB8::1]:443", "2001:db8::1"),
            ("my_host", "my_host"),
            ("localhost", "localhost"),
        ] {
            assert_eq!(request_host(raw).as_deref(), Some(host), "{raw}");
        }
        for bad in [
            "",
            ".",
            ":80",
            "a b",
            " example.com",
            "example.com/evil",
            "example.com\\evil",
            "\"><script>",
            "evil.com'",
            "a:b:c",
            "example.com:80a",
            "[::1",
            "[]",
            "[::1]x",
            "[::1]:8a",
            "[fe80::1%25eth0]",
            "example.com%2f",
            "user@example.com",
            "ex\u{e9}mple.com",
        ] {
            assert_eq!(request_host(bad), None, "{bad}");
        }
    }

    #[test]
    fn bad_hosts_and_paths_are_refused() {
        assert!(HostMatch::parse("exa mple.com").is_err());
        assert!(HostMatch::parse("*.").is_err());
        assert!(HostMatch::parse("a.*.com").is_err());
        assert!(normalize_prefix("api").is_err());
        assert!(normalize_prefix("/api?x=1").is_err());
    }
}
