//! Request hygiene before routing: the size of the request head (431) and of the URI (414).
//! Counted on every request, whatever route it would take.

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
}
