//! Header name spellings in the vendored pingora-http: `ResponseHeader::build_common_case`
//! (what the vendored pingora-core reads an upstream's response into) keeps no spellings map
//! while every name has its common spelling, and must give the same HTTP/1.x head as a
//! response with the map (`ResponseHeader::build`) whatever is done to it: names read in any
//! spelling, then removed, replaced and inserted in any order.
use http::{HeaderName, HeaderValue};
use pingora_http::{ParsedHeaderName, ResponseHeader};

/// One change to a response.
#[derive(Clone, Copy)]
enum Op {
    Append(&'static str, &'static str),
    Insert(&'static str, &'static str),
    /// An insert of a name parsed beforehand: its spelling is the `HeaderName`'s (title case
    /// for a few standard names, lower case otherwise).
    InsertParsed(&'static str, &'static str),
    Remove(&'static str),
}

fn apply(h: &mut ResponseHeader, ops: &[Op]) {
    for op in ops {
        match *op {
            Op::Append(name, value) => {
                h.append_header(name.to_string(), value).unwrap();
            }
            Op::Insert(name, value) => h.insert_header(name.to_string(), value).unwrap(),
            Op::InsertParsed(name, value) => {
                let name = ParsedHeaderName::new(HeaderName::from_static(name));
                h.insert_parsed_header(&name, HeaderValue::from_static(value))
                    .unwrap()
            }
            Op::Remove(name) => {
                h.remove_header(name);
            }
        }
    }
}

fn wire(h: &ResponseHeader) -> String {
    let mut buf = Vec::new();
    h.header_to_h1_wire(&mut buf);
    String::from_utf8(buf).unwrap()
}

#[test]
fn the_common_case_form_writes_what_the_spellings_map_writes() {
    use Op::*;
    let cases: &[&[Op]] = &[
        // Every name commonly spelled: no map is ever made.
        &[
            Append("Content-Type", "text/plain"),
            Append("ETag", "\"v1\""),
            Append("WWW-Authenticate", "Basic"),
            Append("X-Request-Id", "r-1"),
            Append("Content-Length", "2"),
            // Longer than the writer's 64-byte buffer.
            Append(
                "X-A-Name-Long-Enough-To-Be-Written-In-More-Than-One-Piece-By-The-Writer",
                "1",
            ),
        ],
        // Spelled otherwise from the first name, or only later.
        &[Append("content-type", "a"), Append("x-lower", "1")],
        &[
            Append("Content-Type", "a"),
            Append("X-First", "0"),
            Append("x-late", "1"),
            Append("X-After", "2"),
            Append("Etag", "3"),
            Append("X-API-Key", "4"),
        ],
        // One name, three spellings.
        &[
            Append("X-Multi", "1"),
            Append("x-multi", "2"),
            Append("X-MULTI", "3"),
        ],
        // Changed after reading: a removal reorders the map; inserts replace in place.
        &[
            Append("Content-Type", "a"),
            Append("Server", "s"),
            Append("X-Thing", "1"),
            Append("Vary", "Origin"),
            Remove("server"),
            Insert("Content-Length", "2"),
            Insert("X-Thing", "2"),
            InsertParsed("cache-control", "no-store"),
            Append("X-Thing", "3"),
        ],
        // A parsed name spelled in lower case leaves the form; so does an insert.
        &[
            Append("Content-Type", "a"),
            InsertParsed("x-request-id", "r-2"),
            Append("X-After", "1"),
        ],
        &[
            Append("Date", "d"),
            Insert("x-inserted", "1"),
            Remove("date"),
            Append("Date", "e"),
        ],
    ];
    for ops in cases {
        let mut mapped = ResponseHeader::build(200, None).unwrap();
        let mut common = ResponseHeader::build_common_case(200, None).unwrap();
        apply(&mut mapped, ops);
        apply(&mut common, ops);
        assert_eq!(wire(&common), wire(&mapped));
        assert_eq!(common.headers, mapped.headers);
    }
}

/// A response in the common-case form says so in what it writes: each read name spelled as
/// it was read, and a clone writes the same.
#[test]
fn names_read_in_their_common_spelling_are_written_so() {
    let mut h = ResponseHeader::build_common_case(200, None).unwrap();
    apply(
        &mut h,
        &[
            Op::Append("Content-Type", "text/plain"),
            Op::Append("ETag", "\"v1\""),
            Op::Append("X-Upstream-Thing", "1"),
            Op::Append(
                "X-A-Name-Long-Enough-To-Be-Written-In-More-Than-One-Piece-By-The-Writer",
                "2",
            ),
        ],
    );
    let want = "Content-Type: text/plain\r\nETag: \"v1\"\r\nX-Upstream-Thing: 1\r\n\
                X-A-Name-Long-Enough-To-Be-Written-In-More-Than-One-Piece-By-The-Writer: 2\r\n";
    assert_eq!(wire(&h), want);
    assert_eq!(wire(&h.clone()), want);
    assert!(!h.has_case(), "no spellings map for commonly spelled names");
}
