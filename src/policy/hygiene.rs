//! Request hygiene before routing: the size of the request head (431) and of the URI (414),
//! counted on every request whatever route it would take; and path normalisation, so that the
//! path a route is chosen by is the path the app will act on.

use std::borrow::Cow;

use pingora_http::RequestHeader;

#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    pub max_uri_bytes: u64,
    pub max_header_bytes: u64,
    pub max_headers: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum TooLarge {
    Uri,
    Headers,
}

impl HeadLimits {
    pub fn check(&self, req: &RequestHeader) -> Result<(), TooLarge> {
        let uri = req.raw_path().len() as u64;
        if uri > self.max_uri_bytes {
            return Err(TooLarge::Uri);
        }
        if req.headers.len() > self.max_headers {
            return Err(TooLarge::Headers);
        }
        // Name, ": ", value and CRLF, as they came on the wire.
        let bytes: u64 = req
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().len() + v.len() + 4) as u64)
            .sum();
        if bytes > self.max_header_bytes {
            return Err(TooLarge::Headers);
        }
        Ok(())
    }
}

/// Normalises a request path: percent-encoded unreserved characters are decoded (RFC 3986
/// §6.2.2.2: `/%61dmin` is `/admin`), doubled slashes collapse, `.` and `..` segments are
/// resolved (never above the root). An encoded slash (`%2F`), a backslash, an encoded NUL or a
/// broken percent-escape is refused: each means different paths to different servers.
/// Whether a raw HTTP/1 request head has a `Content-Length` field. Pingora drops it from the
/// parsed header when `Transfer-Encoding` is there too, so only the raw bytes still show a
/// request that declared both framings, the shape request smuggling takes (RFC 9112 §6.1).
pub fn raw_head_has_content_length(raw: &[u8]) -> bool {
    const NAME: &[u8] = b"content-length:";
    raw.split(|b| *b == b'\n')
        .skip(1)
        .any(|line| line.len() >= NAME.len() && line[..NAME.len()].eq_ignore_ascii_case(NAME))
}

pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, &'static str> {
    let clean = !path.contains(['%', '\\', ';']) && !path.contains("//") && !path.contains("/.");
    if clean {
        return Ok(Cow::Borrowed(path));
    }
    if path.contains('\\') {
        return Err("a backslash in the path");
    }
    // Tomcat, Jetty and Spring serve `/admin;x` and `/x/..;/admin` as `/admin`: a path
    // parameter would let a request take one route here and another in the app.
    if path.contains(';') {
        return Err("a `;` path parameter in the path");
    }
    // Decode unreserved characters; keep every other escape as it was.
    let bytes = path.as_bytes();
    let mut decoded: Vec<u8> = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .ok_or("a broken percent-escape in the path")?;
            let value = std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a broken percent-escape in the path")?;
            match value {
                b'/' | b'\\' => return Err("an encoded slash in the path"),
                0 => return Err("an encoded NUL in the path"),
                b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => {
                    decoded.push(b)
                }
                _ => {
                    decoded.push(b'%');
                    decoded.extend(hex.iter().map(u8::to_ascii_uppercase));
                }
            }
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8(decoded).map_err(|_| "a path that is not UTF-8")?;
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || (trailing && !segments.is_empty()) {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HeadLimits {
        HeadLimits {
            max_uri_bytes: 32,
            max_header_bytes: 64,
            max_headers: 3,
        }
    }

    #[test]
    fn uris_and_heads_over_the_limits_are_refused() {
        let ok = RequestHeader::build("GET", b"/short", None).unwrap();
        assert_eq!(limits().check(&ok), Ok(()));
        let long =
            RequestHeader::build("GET", format!("/{}", "a".repeat(40)).as_bytes(), None).unwrap();
        assert_eq!(limits().check(&long), Err(TooLarge::Uri));
        let mut big = RequestHeader::build("GET", b"/", None).unwrap();
        big.insert_header("x-big", "v".repeat(80)).unwrap();
        assert_eq!(limits().check(&big), Err(TooLarge::Headers));
        let mut many = RequestHeader::build("GET", b"/", None).unwrap();
        for i in 0..4 {
            many.append_header(format!("x-{i}"), "v").unwrap();
        }
        assert_eq!(limits().check(&many), Err(TooLarge::Headers));
    }

    #[test]
    fn a_content_length_is_found_in_the_raw_head() {
        let both = b"POST / HTTP/1.1\r\nHost: a\r\nContent-LENGTH: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(raw_head_has_content_length(both));
        let te = b"POST /content-length: HTTP/1.1\r\nHost: a\r\nX-Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(!raw_head_has_content_length(te));
    }

    #[test]
    fn paths_are_normalised_before_routing() {
        for (raw, want) in [
            ("/api/jobs", "/api/jobs"),
            ("/public/../admin", "/admin"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E%2E/admin/", "/admin/"),
            ("//admin///x", "/admin/x"),
            ("/./a/./b", "/a/b"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/%61dmin", "/admin"),
            ("/a%20b", "/a%20b"),
            ("/a%3fb", "/a%3Fb"),
            ("/a/..", "/"),
            ("/", "/"),
        ] {
            assert_eq!(normalize_path(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for raw in [
            "/a%2fb",
            "/a%2Fb",
            "/a\\b",
            "/a%5cb",
            "/a%00",
            "/a%zz",
            "/a%2",
            "/admin;x",
            "/x/..;/admin",
        ] {
            assert!(normalize_path(raw).is_err(), "{raw}");
        }
    }

    proptest::proptest! {
        #[test]
        fn normalised_paths_are_canonical(raw in "/[a-zA-Z0-9%./_~-]{0,40}") {
            if let Ok(once) = normalize_path(&raw) {
                proptest::prop_assert!(once.starts_with('/'));
                proptest::prop_assert!(!once.contains("//"));
                proptest::prop_assert!(!once.split('/').any(|s| s == "." || s == ".."), "{}", once);
                let twice = normalize_path(&once).map(|c| c.into_owned());
                proptest::prop_assert_eq!(twice.as_deref(), Ok(once.as_ref()), "normalising is idempotent");
            }
        }

        #[test]
        fn a_dot_segment_never_escapes_a_prefix_check(prefix in "[a-z]{1,8}", rest in "[a-z/.]{0,20}") {
            // Whatever follows, a path that normalises under /prefix really is under it.
            let raw = format!("/{prefix}/{rest}");
            if let Ok(n) = normalize_path(&raw) {
                let lexically_under = n == format!("/{prefix}") || n.starts_with(&format!("/{prefix}/"));
                let depth_ok = !rest.contains("..");
                if depth_ok {
                    proptest::prop_assert!(lexically_under, "{} -> {}", raw, n);
                }
            }
        }
    }
}
