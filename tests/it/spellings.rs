//! Header name spellings in the vendored pingora-http: `ResponseHeader::build_common_case`
//! (what the vendored pingora-core reads an upstream's response into) keeps no spellings map
//! while every name has its common spelling, and must give the same HTTP/1.x head as a
//! response with the map (`ResponseHeader::build`) whatever is done to it: names read in any
//! spelling, then removed, replaced and inserted in any order. A request read by
//! `RequestHeader::build_boxed_from_head` (what the vendored pingora-core reads a request
//! into) keeps no map either, and writes each name as its head spelled it.
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora_http::{ParsedHeaderName, RequestHeader, ResponseHeader};

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

/// A request read from `head` as the vendored pingora-core reads one: each field appended with
/// its name as the head spells it and its value a slice of the head.
fn read_request(head: &'static [u8]) -> Box<RequestHeader> {
    let head = Bytes::from_static(head);
    let text = std::str::from_utf8(&head).unwrap();
    let request_line = text.split("\r\n").next().unwrap();
    let target_at = request_line.find(' ').unwrap() + 1;
    let target_end = target_at + request_line[target_at..].find(' ').unwrap();
    let mut req = RequestHeader::build_boxed_from_head(
        "GET",
        head.slice(target_at..target_end),
        head.clone(),
        None,
    )
    .unwrap();
    let mut at = request_line.len() + 2;
    for line in text[at..].split("\r\n").take_while(|l| !l.is_empty()) {
        let colon = line.find(':').unwrap();
        let value_at = colon + 1 + (line.len() - colon - 1 - line[colon + 1..].trim_start().len());
        let value_end = line.trim_end().len().max(value_at);
        let value =
            HeaderValue::from_maybe_shared(head.slice(at + value_at..at + value_end)).unwrap();
        req.append_read_field(&head[at..at + colon], value).unwrap();
        at += line.len() + 2;
    }
    req
}

fn request_wire(h: &RequestHeader) -> String {
    let mut buf = Vec::new();
    h.header_to_h1_wire(&mut buf);
    String::from_utf8(buf).unwrap()
}

/// A request read from its head writes each name as the head spelled it, values trimmed,
/// in order; and so does its clone (the upstream's request is one), and `map`.
#[test]
fn a_request_read_from_its_head_writes_its_names_as_the_head_spelled_them() {
    let req = read_request(
        b"GET /x HTTP/1.1\r\nHost: a\r\nx-lower: 1\r\nX-UPPER: 2\r\nX-MiXeD: 3\r\n\
          x-multi: 4\r\nX-Multi: 5\r\nX-MULTI: 6\r\nx-padded:   7  \r\nX-Colon: a: b\r\n\r\n",
    );
    let want = "Host: a\r\nx-lower: 1\r\nX-UPPER: 2\r\nX-MiXeD: 3\r\nx-multi: 4\r\n\
                X-Multi: 5\r\nX-MULTI: 6\r\nx-padded: 7\r\nX-Colon: a: b\r\n";
    assert_eq!(request_wire(&req), want);
    assert_eq!(request_wire(&req.clone()), want);
    assert!(!req.has_case(), "no spellings map");
    let mut mapped = String::new();
    req.map(|name, value| {
        let name = match name {
            pingora_http::HeaderNameVariant::Case(c) => {
                String::from_utf8(c.as_slice().to_vec()).unwrap()
            }
            pingora_http::HeaderNameVariant::Titled(t) => t.to_string(),
        };
        mapped += &format!("{name}: {}\r\n", value.to_str().unwrap());
        Ok(())
    })
    .unwrap();
    assert_eq!(mapped, want);
}

/// One change to a request after it was read.
#[derive(Clone)]
enum ReqOp {
    Remove(&'static str),
    /// An insert or append with a name given as text: the map keeps that spelling.
    Insert(&'static str, &'static str),
    Append(&'static str, &'static str),
    /// An insert with a `HeaderName` (no spelling of its own, as the gateway sets `Host`).
    InsertName(HeaderName, &'static str),
    /// An insert of the value another name has (a value moved to another name).
    Move(&'static str, &'static str),
    Omit(HeaderName),
}

fn apply_request(h: &mut RequestHeader, ops: &[ReqOp]) {
    for op in ops {
        match op {
            ReqOp::Remove(name) => {
                h.remove_header(*name);
            }
            ReqOp::Insert(name, value) => h.insert_header(name.to_string(), *value).unwrap(),
            ReqOp::Append(name, value) => {
                h.append_header(name.to_string(), *value).unwrap();
            }
            ReqOp::InsertName(name, value) => h.insert_header(name.clone(), *value).unwrap(),
            ReqOp::Move(from, to) => {
                let value = h.headers.get(*from).unwrap().clone();
                h.insert_header(to.to_string(), value).unwrap();
            }
            ReqOp::Omit(name) => h.omit_header(name),
        }
    }
}

/// Whatever is done to a request read from its head afterwards, it writes what the same
/// request with a spellings map writes (`RequestHeader::build`, each field appended with its
/// spelling): names removed, inserted and appended in any spelling or as a `HeaderName`,
/// a value moved to another name, a name omitted; and so do their clones.
#[test]
fn a_request_read_from_its_head_writes_what_one_with_the_map_writes() {
    const HEAD: &[u8] = b"GET /x HTTP/1.1\r\nhost: a\r\nx-gone: 0\r\nX-KEEP: 1\r\n\
        x-a: moved\r\nX-Replaced: old\r\nx-twice: first\r\nAUTHORIZATION: secret\r\n\r\n";
    use ReqOp::*;
    let cases: Vec<Vec<ReqOp>> = vec![
        vec![],
        vec![Remove("x-gone")],
        // Names spelled as a `HeaderName` writes them: no map is needed.
        vec![Insert("x-new", "2"), Append("x-twice", "second")],
        vec![InsertName(http::header::HOST, "b")],
        vec![Move("x-a", "x-b")],
        // Names spelled otherwise: the map is made, the read names keep their spellings.
        vec![Insert("X-New", "2")],
        vec![
            Remove("x-gone"),
            Insert("x-replaced", "new"),
            Append("X-Twice", "second"),
        ],
        vec![Move("x-a", "X-B"), Remove("X-KEEP"), Insert("X-Third", "3")],
        vec![Omit(http::header::AUTHORIZATION)],
        vec![
            Omit(http::header::AUTHORIZATION),
            Insert("X-New", "2"),
            Remove("x-gone"),
        ],
    ];
    for ops in &cases {
        let mut read = read_request(HEAD);
        let mut mapped = RequestHeader::build("GET", b"/x", None).unwrap();
        let text = std::str::from_utf8(HEAD).unwrap();
        for line in text.split("\r\n").skip(1).take_while(|l| !l.is_empty()) {
            let (name, value) = line.split_once(": ").unwrap();
            mapped
                .append_header(name.to_string(), value.to_string())
                .unwrap();
        }
        apply_request(&mut read, ops);
        apply_request(&mut mapped, ops);
        let want = request_wire(&mapped);
        assert_eq!(request_wire(&read), want, "after {} changes", ops.len());
        assert_eq!(request_wire(&read.clone()), want);
        assert_eq!(read.headers, mapped.headers);
    }
}
