//! A set of header names for the one question asked of every response header: "does this
//! one go?". Names are kept by length, so most lookups end at an empty bucket; the rest
//! compare the few names of the same length. No hashing: even the `http` header map's cheap
//! hash and probe cost several times that, and a response brings a handful of headers.

use std::sync::Arc;

use http::HeaderName;
use pingora_core::protocols::http::v1::client::ResponseFieldDrop;

/// Names longer than this share the last bucket.
const LONGEST_BUCKET: usize = 40;

#[derive(Debug, Default)]
pub struct NameSet {
    /// `by_len[n]`: the names of `n` bytes (the last bucket: of `LONGEST_BUCKET` or more).
    by_len: Vec<Vec<HeaderName>>,
    /// Names that match by their start.
    prefixes: Vec<&'static str>,
    /// Bit `b` set when a prefix starts with byte `b`: a name whose first byte is not one of
    /// them skips the list (header names are ASCII).
    prefix_starts: u128,
}

impl NameSet {
    pub fn new(
        names: impl IntoIterator<Item = HeaderName>,
        prefixes: impl IntoIterator<Item = &'static str>,
    ) -> Self {
        let mut by_len: Vec<Vec<HeaderName>> = Vec::new();
        for name in names {
            let bucket = name.as_str().len().min(LONGEST_BUCKET);
            if by_len.len() <= bucket {
                by_len.resize_with(bucket + 1, Vec::new);
            }
            if !by_len[bucket].contains(&name) {
                by_len[bucket].push(name);
            }
        }
        let mut kept: Vec<&'static str> = Vec::new();
        let mut prefix_starts = 0u128;
        for prefix in prefixes {
            if let Some(&first) = prefix.as_bytes().first() {
                prefix_starts |= 1u128.checked_shl(first.into()).unwrap_or(0);
            }
            if !kept.contains(&prefix) {
                kept.push(prefix);
            }
        }
        NameSet {
            by_len,
            prefixes: kept,
            prefix_starts,
        }
    }

    /// This set, and `names` and `prefixes`.
    pub fn with(
        &self,
        names: impl IntoIterator<Item = HeaderName>,
        prefixes: impl IntoIterator<Item = &'static str>,
    ) -> NameSet {
        NameSet::new(
            self.by_len.iter().flatten().cloned().chain(names),
            self.prefixes.iter().copied().chain(prefixes),
        )
    }

    /// The set as the question Pingora asks of each field of an upstream's response as it
    /// parses it (`ProxyHttp::upstream_response_drop`).
    pub fn into_drop(self) -> UpstreamDrop {
        UpstreamDrop(Arc::new(move |name: &HeaderName| self.contains(name)))
    }

    pub fn contains(&self, name: &HeaderName) -> bool {
        let text = name.as_str();
        let exact = self
            .by_len
            .get(text.len().min(LONGEST_BUCKET))
            .is_some_and(|bucket| bucket.iter().any(|n| n == name));
        let first = text.as_bytes().first().copied().unwrap_or(0);
        exact
            || ((self.prefix_starts >> (first & 0x7f)) & 1 == 1
                && self.prefixes.iter().any(|p| text.starts_with(p)))
    }
}

/// A [`NameSet`] as Pingora's question (a closure, so without `Debug` of its own).
#[derive(Clone)]
pub struct UpstreamDrop(pub ResponseFieldDrop);

impl std::fmt::Debug for UpstreamDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamDrop")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_found_whatever_its_length_and_nothing_else_is() {
        let long = "x-".to_string() + &"a".repeat(60);
        let longer = "x-".to_string() + &"a".repeat(61);
        let set = NameSet::new(
            [
                http::header::SERVER,
                HeaderName::from_static("x-powered-by"),
                HeaderName::from_static("via"),
                HeaderName::from_bytes(long.as_bytes()).unwrap(),
                http::header::SERVER,
            ],
            ["x-drupal-"],
        )
        .with([HeaderName::from_static("date")], ["access-control-"]);
        for found in [
            "server",
            "x-powered-by",
            "via",
            &long,
            "x-drupal-cache",
            "x-drupal-",
            "date",
            "access-control-allow-origin",
        ] {
            assert!(
                set.contains(&HeaderName::from_bytes(found.as_bytes()).unwrap()),
                "{found}"
            );
        }
        for not in [
            "content-type",
            "x-powered-bx",
            "servers",
            "vib",
            &longer,
            "x-drupal",
            "access-control",
            "age",
            "a",
        ] {
            assert!(
                !set.contains(&HeaderName::from_bytes(not.as_bytes()).unwrap()),
                "{not}"
            );
        }
        let empty = NameSet::new([], []);
        assert!(!empty.contains(&http::header::SERVER));
    }
}
