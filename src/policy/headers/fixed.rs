//! Response headers that are the same on every response, made once at load in both of the
//! forms a response can take them in.
//!
//! An insert into a Pingora response header costs a few hundred instructions per header (two
//! hash maps, and their growth); the strict presets add ten of them to every response. For an
//! HTTP/1.x client the same headers can go out as one ready-made block of lines instead
//! (`ResponseHeader::append_h1_lines`, a patch in `vendor/pingora-http`), which costs a
//! `memcpy` into the response's one buffer of lines. For an HTTP/2 client they go as one
//! shared block of fields (`ResponseHeader::set_h2_block`, patches in `vendor/pingora-http`,
//! `vendor/pingora-core` and `vendor/h2`): an `Arc` clone, and the connection's HPACK encoder
//! copies its last encoding of the block while its table is unchanged. Anything that reads
//! the map afterwards needs them in it, so the map form stays for that.

use http::{HeaderName, HeaderValue};
use pingora_http::{H2Block, ParsedHeaderName, ResponseHeader};

/// How a response takes the gateway's headers, from what the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderForm {
    /// Into the header map, names spelled for HTTP/1.x too: right for every response, for
    /// when the client's protocol is not known.
    Map,
    /// As ready-made lines after the map's: for a response to an HTTP/1.x client.
    H1Lines,
    /// As a shared block of fields after the map's, or into the header map without HTTP/1.x
    /// spellings (HTTP/2 names have no case): for a response to an HTTP/2 client.
    H2,
}

/// A fixed list of response headers, parsed and spelled once.
#[derive(Debug, Clone)]
pub struct FixedHeaders {
    map: Vec<(ParsedHeaderName, HeaderValue)>,
    /// The same headers as HTTP/1.x lines, spelled as `header_to_h1_wire` spells the map's.
    lines: Box<[u8]>,
    /// The same headers as one shared block of HTTP/2 fields (`ResponseHeader::set_h2_block`).
    h2: H2Block,
}

impl FixedHeaders {
    pub fn new(list: impl IntoIterator<Item = (HeaderName, HeaderValue)>) -> FixedHeaders {
        let map: Vec<(ParsedHeaderName, HeaderValue)> = list
            .into_iter()
            .map(|(name, value)| (ParsedHeaderName::new(name), value))
            .collect();
        // Written by Pingora's own writer, so both forms put the same bytes on the wire.
        let mut lines = Vec::new();
        if let Ok(mut scratch) = ResponseHeader::build(200, Some(map.len())) {
            for (name, value) in &map {
                // Valid names and values, on a header map far below its size limit.
                let _ = scratch.append_header(name.name().clone(), value.clone());
            }
            scratch.header_to_h1_wire(&mut lines);
        }
        let h2: H2Block = map
            .iter()
            .map(|(name, value)| (name.name().clone(), value.clone()))
            .collect();
        FixedHeaders {
            map,
            lines: lines.into_boxed_slice(),
            h2,
        }
    }

    /// Sets the headers, replacing the response's own of these names. In the lines and the
    /// HTTP/2 forms nothing is replaced: the caller has removed the response's own first.
    /// Over HTTP/2 they go as one of the response's shared blocks of fields (one `Arc`
    /// clone, and HPACK reuses the block's encoding; see `set_h2_block`).
    pub fn set(&self, header: &mut ResponseHeader, form: HeaderForm) -> pingora_error::Result<()> {
        match form {
            HeaderForm::H1Lines => self.append_lines(header),
            HeaderForm::H2 => {
                if !self.map.is_empty() {
                    header.set_h2_block(self.h2.clone())?;
                }
            }
            HeaderForm::Map => {
                for (name, value) in &self.map {
                    header.insert_parsed_header(name, value.clone())?;
                }
            }
        }
        Ok(())
    }

    /// Adds the headers beside any of the same names the response has (`Vary`).
    pub fn append(
        &self,
        header: &mut ResponseHeader,
        form: HeaderForm,
    ) -> pingora_error::Result<()> {
        match form {
            HeaderForm::H1Lines => self.append_lines(header),
            HeaderForm::H2 => {
                if !self.map.is_empty() {
                    header.append_h2_block(self.h2.clone())?;
                }
            }
            HeaderForm::Map => {
                for (name, value) in &self.map {
                    header.append_header(name.name().clone(), value.clone())?;
                }
            }
        }
        Ok(())
    }

    /// The length of the lines form, for reserving room before appending it.
    pub fn lines_len(&self) -> usize {
        self.lines.len()
    }

    fn append_lines(&self, header: &mut ResponseHeader) {
        if !self.lines.is_empty() {
            header.append_h1_lines(&self.lines);
        }
    }
}

/// Room kept for a response's own lines after its fixed ones, so they stay one allocation:
/// the request id (47 bytes), `RateLimit` and its policy (about 80), and CORS (an echoed
/// origin, `Vary`, credentials and exposed headers: about 150).
pub(super) const PER_RESPONSE_LINES: usize = 384;

/// Header lines in HTTP/1.x form, gathered into one buffer: for the values that change per
/// request or response. Each value is checked as a `HeaderValue` is (no control character
/// but tab), so nothing can split a line.
#[derive(Debug, Default)]
pub struct HeaderLines(Vec<u8>);

impl HeaderLines {
    pub fn push(&mut self, name: &[u8], value: &[u8]) -> pingora_error::Result<()> {
        write_line(&mut self.0, name, value)
    }

    /// Appends lines made and checked earlier (`Name: value\r\n` each).
    pub fn push_trusted(&mut self, lines: &[u8]) {
        self.0.extend_from_slice(lines);
    }

    /// The buffer, for `append_h1_lines_owned`.
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

/// Headers whose values change per response (the echoed origin, `RateLimit`, the request
/// id): inserted into the map, or written as lines straight into the response's own (one
/// buffer with its fixed lines, see [`HeaderLines`]).
pub struct ResponseLines {
    form: HeaderForm,
}

impl ResponseLines {
    pub fn new(form: HeaderForm) -> ResponseLines {
        ResponseLines { form }
    }

    pub fn form(&self) -> HeaderForm {
        self.form
    }

    /// Sets a header. In the lines form nothing is replaced: the caller has removed the
    /// response's own of that name.
    pub fn set(
        &mut self,
        header: &mut ResponseHeader,
        name: &ParsedHeaderName,
        value: &HeaderValue,
    ) -> pingora_error::Result<()> {
        match self.form {
            HeaderForm::Map | HeaderForm::H2 => header.insert_parsed_header(name, value.clone()),
            HeaderForm::H1Lines => push_line(header, name, value.as_bytes()),
        }
    }

    /// Sets a header whose value is new on (nearly) every response: the request id, the
    /// `RateLimit` count. Over HTTP/2 it goes out as HPACK's never-indexed literal, written
    /// here (`ResponseHeader::append_h2_literal`): no map insert, no table search, no Huffman
    /// coding in the connection's encoder, and the table left alone. Indexed, each value
    /// would enter the connection's table, where it never matches again: every later
    /// response of that name would be compared against all of them (about 2k instructions
    /// a response), and they would push the constant headers out. The price is the name in
    /// full and the value uncoded (about 20 bytes; nginx sends every header so). In the
    /// lines and HTTP/2 forms nothing is replaced: the caller has removed the response's own
    /// of that name.
    pub fn set_unique(
        &mut self,
        header: &mut ResponseHeader,
        name: &ParsedHeaderName,
        value: &HeaderValue,
    ) -> pingora_error::Result<()> {
        match self.form {
            HeaderForm::H2 => header.append_h2_literal(name.name(), value.as_bytes()),
            HeaderForm::Map | HeaderForm::H1Lines => self.set(header, name, value),
        }
    }

    /// [`Self::set_unique`] for a value the gateway made as text (the request id, `RateLimit`):
    /// as a line it is written as it is, with no `HeaderValue` (an allocation) made for it.
    pub fn set_unique_text(
        &mut self,
        header: &mut ResponseHeader,
        name: &ParsedHeaderName,
        value: &[u8],
    ) -> pingora_error::Result<()> {
        match self.form {
            HeaderForm::H1Lines => push_line(header, name, value),
            HeaderForm::H2 => header.append_h2_literal(name.name(), value),
            HeaderForm::Map => {
                let value = HeaderValue::from_bytes(value).map_err(|_| invalid_value())?;
                self.set_unique(header, name, &value)
            }
        }
    }
}

/// Writes one line into the response's own lines.
fn push_line(
    header: &mut ResponseHeader,
    name: &ParsedHeaderName,
    value: &[u8],
) -> pingora_error::Result<()> {
    write_line(header.h1_lines_mut(), name.spelling(), value)
}

/// Appends `name: value\r\n`, the value checked as a `HeaderValue` is (no control character
/// but tab), so nothing can split a line.
fn write_line(buf: &mut Vec<u8>, name: &[u8], value: &[u8]) -> pingora_error::Result<()> {
    if !crate::scan::is_header_value(value) {
        return Err(invalid_value());
    }
    if buf.is_empty() {
        buf.reserve(256);
    }
    buf.extend_from_slice(name);
    buf.extend_from_slice(b": ");
    buf.extend_from_slice(value);
    buf.extend_from_slice(b"\r\n");
    Ok(())
}

fn invalid_value() -> Box<pingora_error::Error> {
    pingora_error::Error::explain(
        pingora_error::ErrorType::InvalidHTTPHeader,
        "invalid header value",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(h: &ResponseHeader) -> String {
        let mut buf = Vec::new();
        h.header_to_h1_wire(&mut buf);
        String::from_utf8(buf).unwrap()
    }

    fn upstream() -> ResponseHeader {
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.append_header("Content-Type", "text/plain").unwrap();
        h.append_header("Vary", "Accept-Encoding").unwrap();
        h
    }

    #[test]
    fn both_forms_write_the_same_lines() {
        let fixed = FixedHeaders::new([
            (
                HeaderName::from_static("x-frame-options"),
                HeaderValue::from_static("DENY"),
            ),
            (
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            ),
            (
                HeaderName::from_static("permissions-policy"),
                HeaderValue::from_static("camera=()"),
            ),
        ]);
        let (mut map, mut lines) = (upstream(), upstream());
        fixed.set(&mut map, HeaderForm::Map).unwrap();
        fixed.set(&mut lines, HeaderForm::H1Lines).unwrap();
        assert_eq!(wire(&lines), wire(&map));
        assert!(
            lines.headers.get("x-frame-options").is_none(),
            "not in the map"
        );
        assert_eq!(
            wire(&lines),
            "Content-Type: text/plain\r\nVary: Accept-Encoding\r\nx-frame-options: DENY\r\n\
             Cache-Control: no-store\r\npermissions-policy: camera=()\r\n"
        );
    }

    /// Over HTTP/2 each fixed set is one of the response's shared blocks (the same `Arc` on
    /// every response), not map entries, in the order they were set. Past the sixth, a set
    /// goes into the map (replacing), an append beside the response's own. Written as
    /// HTTP/1.x after all, the blocks' fields still go out.
    #[test]
    fn over_http2_sets_are_shared_blocks_until_the_places_run_out() {
        let one = |name: &'static str, value: &'static str| {
            FixedHeaders::new([(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            )])
        };
        let first = FixedHeaders::new([
            (
                HeaderName::from_static("x-frame-options"),
                HeaderValue::from_static("DENY"),
            ),
            (
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            ),
        ]);
        let more: Vec<FixedHeaders> = ["x-b", "x-c", "x-d", "x-e", "x-f"]
            .into_iter()
            .map(|n| one(n, "1"))
            .collect();
        let (mut a, mut b) = (upstream(), upstream());
        for h in [&mut a, &mut b] {
            h.drop_case();
            first.set(h, HeaderForm::H2).unwrap();
            for m in &more {
                m.set(h, HeaderForm::H2).unwrap();
            }
        }
        let blocks: Vec<_> = a.h2_blocks().cloned().collect();
        assert_eq!(blocks.len(), 6);
        assert!(std::sync::Arc::ptr_eq(
            &blocks[0],
            b.h2_blocks().next().unwrap()
        ));
        let fields: Vec<(&str, &str)> = blocks[0]
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            fields,
            [("x-frame-options", "DENY"), ("cache-control", "no-store")]
        );
        assert!(a.headers.get("x-frame-options").is_none(), "not in the map");
        // The places are taken: a set replaces the map's, an append goes beside it.
        one("content-type", "text/html")
            .set(&mut a, HeaderForm::H2)
            .unwrap();
        one("vary", "Origin")
            .append(&mut a, HeaderForm::H2)
            .unwrap();
        assert_eq!(a.headers["content-type"], "text/html");
        let vary: Vec<_> = a.headers.get_all("vary").iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"]);
        assert!(wire(&a).ends_with(
            "x-frame-options: DENY\r\ncache-control: no-store\r\nx-b: 1\r\nx-c: 1\r\n\
             x-d: 1\r\nx-e: 1\r\nx-f: 1\r\n"
        ));
        assert_eq!(a.take_h2_blocks().len(), 6);
        assert_eq!(a.h2_blocks().count(), 0);
        let mut none = upstream();
        FixedHeaders::new([])
            .set(&mut none, HeaderForm::H2)
            .unwrap();
        assert_eq!(none.h2_blocks().count(), 0, "no empty block");
    }

    #[test]
    fn append_keeps_the_responses_own_values_in_both_forms() {
        let vary = FixedHeaders::new([(http::header::VARY, HeaderValue::from_static("Origin"))]);
        for form in [HeaderForm::Map, HeaderForm::H1Lines] {
            let mut h = upstream();
            vary.append(&mut h, form).unwrap();
            assert_eq!(
                wire(&h),
                "Content-Type: text/plain\r\nVary: Accept-Encoding\r\nvary: Origin\r\n",
                "{form:?}"
            );
        }
    }

    #[test]
    fn per_response_values_write_the_same_lines_in_both_forms() {
        let names = [
            ParsedHeaderName::new(HeaderName::from_static("x-request-id")),
            ParsedHeaderName::new(http::header::CACHE_CONTROL),
        ];
        let values = [
            HeaderValue::from_static("r-1"),
            HeaderValue::from_static("no-store"),
        ];
        let mut out = Vec::new();
        for form in [HeaderForm::Map, HeaderForm::H1Lines] {
            let mut h = upstream();
            let mut lines = ResponseLines::new(form);
            for (name, value) in names.iter().zip(&values) {
                lines.set(&mut h, name, value).unwrap();
            }
            out.push(wire(&h));
        }
        assert_eq!(out[0], out[1]);
        assert_eq!(
            out[1],
            "Content-Type: text/plain\r\nVary: Accept-Encoding\r\nx-request-id: r-1\r\n\
             Cache-Control: no-store\r\n"
        );
    }

    /// Over HTTP/2 a per-response value is a never-indexed HPACK literal written at once
    /// (RFC 7541 §6.2.3: 0x10, then name and value each with its length, no Huffman), kept
    /// out of the header map; for HTTP/1.x it is an ordinary line, and nothing is marked.
    #[test]
    fn unique_values_are_never_indexed_literals_over_http2_only() {
        let name = ParsedHeaderName::new(HeaderName::from_static("x-request-id"));
        let other = ParsedHeaderName::new(http::header::CACHE_CONTROL);
        let value = HeaderValue::from_static("r-1");

        let mut h = upstream();
        h.drop_case();
        let mut lines = ResponseLines::new(HeaderForm::H2);
        lines.set_unique(&mut h, &name, &value).unwrap();
        lines.set(&mut h, &other, &value).unwrap();
        assert!(!h.headers.contains_key("x-request-id"), "not in the map");
        assert_eq!(
            h.h2_literals().collect::<Vec<_>>(),
            [(&b"x-request-id"[..], &b"r-1"[..])]
        );
        assert!(!h.headers["cache-control"].is_sensitive());
        let long = "r".repeat(300);
        lines
            .set_unique_text(&mut h, &name, long.as_bytes())
            .unwrap();
        let hpack = h.take_h2_literals();
        assert_eq!(&hpack[..20], b"\x10\x0cx-request-id\x03r-1\x10\x0c");
        // 300 = 127 + 173: 0x7f, then 173 seven bits a byte (0x2d | 0x80, then 0x01).
        assert_eq!(&hpack[32..35], [0x7f, 0xad, 0x01]);
        assert_eq!(hpack.len(), 35 + 300);
        assert_eq!(h.h2_literals().count(), 0, "taken");

        for form in [HeaderForm::Map, HeaderForm::H1Lines] {
            let mut h = upstream();
            let mut lines = ResponseLines::new(form);
            lines.set_unique(&mut h, &name, &value).unwrap();
            assert!(wire(&h).contains("x-request-id: r-1\r\n"), "{form:?}");
            assert!(h.headers.values().all(|v| !v.is_sensitive()), "{form:?}");
        }
    }

    /// The request id goes out as text: the same line as through a `HeaderValue`, never
    /// indexed over HTTP/2, and refused in every form if it could split a line.
    #[test]
    fn a_unique_text_value_is_sent_as_a_unique_value_is() {
        let name = ParsedHeaderName::new(HeaderName::from_static("x-request-id"));
        for form in [HeaderForm::Map, HeaderForm::H1Lines, HeaderForm::H2] {
            let (mut text, mut value) = (upstream(), upstream());
            let mut lines = ResponseLines::new(form);
            lines.set_unique_text(&mut text, &name, b"r-1").unwrap();
            let r1 = HeaderValue::from_static("r-1");
            lines.set_unique(&mut value, &name, &r1).unwrap();
            assert_eq!(wire(&text), wire(&value), "{form:?}");
            assert_eq!(text.h1_lines(), value.h1_lines(), "{form:?}");
            let literals: Vec<_> = text.h2_literals().collect();
            assert_eq!(
                literals,
                value.h2_literals().collect::<Vec<_>>(),
                "{form:?}"
            );
            assert_eq!(
                literals.len(),
                usize::from(form == HeaderForm::H2),
                "{form:?}"
            );
            let mut bad = upstream();
            assert!(
                lines
                    .set_unique_text(&mut bad, &name, b"r\r\nx-evil: 1")
                    .is_err(),
                "{form:?}"
            );
            assert!(!wire(&bad).contains("x-evil"), "{form:?}");
        }
    }

    #[test]
    fn a_line_cannot_be_split_by_its_value() {
        let mut lines = HeaderLines::default();
        for bad in [&b"a\r\nx-evil: 1"[..], b"a\nb", b"a\x00b", b"a\x7fb"] {
            assert!(lines.push(b"x-a", bad).is_err(), "{bad:?}");
        }
        lines.push(b"x-a", "tab\tand é".as_bytes()).unwrap();
        assert_eq!(lines.into_vec(), "x-a: tab\tand é\r\n".as_bytes());
        assert!(HeaderLines::default().into_vec().is_empty());
    }

    #[test]
    fn an_empty_list_adds_nothing() {
        let none = FixedHeaders::new([]);
        let mut h = upstream();
        none.set(&mut h, HeaderForm::H1Lines).unwrap();
        assert!(h.h1_lines().is_empty());
    }
}
