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
    /// Names that match by their start, all `x-...` (a unit test checks the presets'), so a
    /// name that is not skips the list.
    prefixes: &'static [&'static str],
}

impl NameSet {
    pub fn new(
        names: impl IntoIterator<Item = HeaderName>,
        prefixes: &'static [&'static str],
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
        NameSet { by_len, prefixes }
    }

    /// This set and `more`.
    pub fn with(&self, more: impl IntoIterator<Item = HeaderName>) -> NameSet {
        NameSet::new(
            self.by_len.iter().flatten().cloned().chain(more),
            self.prefixes,
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
        exact
            || (!self.prefixes.is_empty()
                && text.starts_with("x-")
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
            &["x-drupal-"],
        );
        for found in [
            "server",
            "x-powered-by",
            "via",
            &long,
            "x-drupal-cache",
            "x-drupal-",
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
            "date",
            "a",
        ] {
            assert!(
                !set.contains(&HeaderName::from_bytes(not.as_bytes()).unwrap()),
                "{not}"
            );
        }
        let empty = NameSet::new([], &[]);
        assert!(!empty.contains(&http::header::SERVER));
    }
}
