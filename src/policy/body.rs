//! Request bodies: the size limit (refused on `Content-Length` before an upstream is chosen,
//! counted while streaming otherwise) and the allowed content types.

use http::{HeaderMap, HeaderValue};

use crate::config::diagnostics::Diagnostics;
use crate::config::KeyPath;

/// Allowed media types, lowercased (`application/json`), compared without parameters.
#[derive(Debug, Clone)]
pub struct ContentTypes {
    types: Vec<String>,
}

impl ContentTypes {
    pub fn compile(
        list: &[String],
        path: &KeyPath,
        diags: &mut Diagnostics,
    ) -> Option<ContentTypes> {
        let mut types = Vec::new();
        for (i, t) in list.iter().enumerate() {
            let lower = t.trim().to_ascii_lowercase();
            let valid = lower.split_once('/').is_some_and(|(a, b)| {
                !a.is_empty() && !b.is_empty() && !lower.contains([';', ' ', ','])
            });
            if valid {
                types.push(lower);
            } else {
                diags.error(
                    path.index(i),
                    format!("`{t}` is not a media type like \"application/json\""),
                );
            }
        }
        if list.is_empty() {
            diags.error(
                path.clone(),
                "an empty list would refuse every body; leave it out to allow any",
            );
        }
        Some(ContentTypes { types })
    }

    /// Whether a request's `Content-Type` is allowed (a missing one is not).
    pub fn allows(&self, content_type: Option<&HeaderValue>) -> bool {
        let Some(media) = content_type.and_then(|v| v.to_str().ok()).map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        }) else {
            return false;
        };
        self.types.contains(&media)
    }
}

/// What a request's headers say about its body.
#[derive(Debug, PartialEq, Eq)]
pub enum Declared {
    /// No body: no `Content-Length` (or 0) and no `Transfer-Encoding`.
    None,
    Length(u64),
    /// Chunked (HTTP/1.1) or an HTTP/2 body of unknown length.
    Streamed,
    /// A `Content-Length` that is not one plain number.
    Invalid,
}

pub fn declared(headers: &HeaderMap, http2: bool, end_of_stream: bool) -> Declared {
    // Both framings at once is how requests are smuggled past a proxy (RFC 9112 §6.1): refuse.
    if headers.contains_key(http::header::TRANSFER_ENCODING)
        && headers.contains_key(http::header::CONTENT_LENGTH)
    {
        return Declared::Invalid;
    }
    let lengths: Vec<&HeaderValue> = headers
        .get_all(http::header::CONTENT_LENGTH)
        .iter()
        .collect();
    if let Some(first) = lengths.first() {
        let parse = |v: &HeaderValue| {
            let b = v.as_bytes();
            (!b.is_empty() && b.len() <= 19 && b.iter().all(u8::is_ascii_digit))
                .then(|| std::str::from_utf8(b).ok()?.parse::<u64>().ok())
                .flatten()
        };
        return match parse(first) {
            Some(n) if lengths.iter().all(|v| parse(v) == Some(n)) => {
                if n == 0 {
                    Declared::None
                } else {
                    Declared::Length(n)
                }
            }
            _ => Declared::Invalid,
        };
    }
    if headers.contains_key(http::header::TRANSFER_ENCODING) || (http2 && !end_of_stream) {
        return Declared::Streamed;
    }
    Declared::None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn content_length_is_one_plain_number_or_invalid() {
        assert_eq!(
            declared(&headers(&[("content-length", "12")]), false, false),
            Declared::Length(12)
        );
        assert_eq!(
            declared(&headers(&[("content-length", "0")]), false, false),
            Declared::None
        );
        assert_eq!(
            declared(&headers(&[("content-length", "+12")]), false, false),
            Declared::Invalid
        );
        assert_eq!(
            declared(&headers(&[("content-length", "1, 2")]), false, false),
            Declared::Invalid
        );
        assert_eq!(
            declared(
                &headers(&[("content-length", "5"), ("content-length", "6")]),
                false,
                false
            ),
            Declared::Invalid
        );
        assert_eq!(
            declared(&headers(&[("transfer-encoding", "chunked")]), false, false),
            Declared::Streamed
        );
        assert_eq!(declared(&headers(&[]), true, false), Declared::Streamed);
        assert_eq!(declared(&headers(&[]), false, false), Declared::None);
        let both = headers(&[("content-length", "5"), ("transfer-encoding", "chunked")]);
        assert_eq!(
            declared(&both, false, false),
            Declared::Invalid,
            "smuggling framing"
        );
    }

    #[test]
    fn media_types_are_compared_without_parameters_or_case() {
        let mut d = Diagnostics::default();
        let t =
            ContentTypes::compile(&["application/json".into()], &KeyPath::root(), &mut d).unwrap();
        assert!(t.allows(Some(&HeaderValue::from_static(
            "Application/JSON; charset=utf-8"
        ))));
        assert!(!t.allows(Some(&HeaderValue::from_static("text/plain"))));
        assert!(!t.allows(Some(&HeaderValue::from_static("application/jsonx"))));
        assert!(!t.allows(None));
    }
}
