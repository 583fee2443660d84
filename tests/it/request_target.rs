//! The request line of an HTTP/1.x request, built from slices of the buffer it was read into
//! (pingora-http's `RequestHeader::build_boxed_shared`, patch 24): an origin-form target
//! becomes the URI without a copy, and every target is stored as `build_boxed`, which copies,
//! stores it: the same URI, the same wire form, the same errors. And the checks of a request's
//! authority against its `Host`, which a plain origin-form request skips (pingora-core's
//! `is_plain_origin_form`, pingora-proxy's patch 8): the same verdict, the same request after.
use bytes::Bytes;
use pingora_core::protocols::http::authority::{
    is_plain_origin_form, validate_request_authority, validate_request_authority_in_full,
};
use pingora_http::RequestHeader;
use pingora_proxy::{finish_h1_upstream_authority, finish_h1_upstream_authority_in_full};
use proptest::prelude::*;

/// What a stored request-target looks like from outside: the URI, the bytes for the wire,
/// and whether they are UTF-8. `None` for a target refused.
fn stored(req: pingora_error::Result<Box<RequestHeader>>) -> Option<(String, Vec<u8>, bool)> {
    let req = req.ok()?;
    Some((
        req.uri.to_string(),
        req.raw_path().to_vec(),
        req.raw_path_is_utf8(),
    ))
}

fn same_as_copied(target: &[u8]) {
    let copied = stored(RequestHeader::build_boxed("GET", target, None));
    let shared = stored(RequestHeader::build_boxed_shared(
        "GET",
        Bytes::copy_from_slice(target),
        None,
    ));
    assert_eq!(
        shared,
        copied,
        "target {:?}",
        String::from_utf8_lossy(target)
    );
}

#[test]
fn every_form_of_target_is_stored_as_the_copying_build_stores_it() {
    for target in [
        "/",
        "/a/b?c=d&e",
        "?q=1",
        "*",
        "",
        "/path#fragment",
        "#only",
        "/caf\u{e9}",
        "http://example.com/x?y",
        "http://example.com?y",
        "http://example.com",
        "example.com:443",
        "foo:bar://host/admin",
        "/with space",
        "/with\"quote{}",
    ] {
        same_as_copied(target.as_bytes());
    }
    same_as_copied(b"/not\xffutf8");
    same_as_copied(b"/not\xffutf8#frag");
    same_as_copied(b"/\x7f");
}

#[test]
fn an_origin_form_target_is_the_read_buffers_bytes_not_a_copy() {
    let buffer = Bytes::from_static(b"/orders/42?expand=items");
    let req = RequestHeader::build_boxed_shared("GET", buffer.clone(), None).expect("valid");
    let stored = req.uri.path_and_query().expect("a path").as_str();
    assert_eq!(stored, "/orders/42?expand=items");
    assert_eq!(
        stored.as_ptr(),
        buffer.as_ptr(),
        "the URI holds a copy of the target"
    );
}

#[test]
fn an_unknown_method_is_refused_as_the_copying_build_refuses_it() {
    assert!(RequestHeader::build_boxed_shared("GE T", Bytes::from_static(b"/"), None).is_err());
    assert!(RequestHeader::build_boxed_shared(&b""[..], Bytes::from_static(b"/"), None).is_err());
    let custom = RequestHeader::build_boxed_shared("PURGE", Bytes::from_static(b"/"), None);
    assert_eq!(
        custom.expect("an extension method").method.as_str(),
        "PURGE"
    );
}

proptest! {
    #[test]
    fn any_target_is_stored_as_the_copying_build_stores_it(
        target in proptest::collection::vec(
            prop::sample::select(&b"/?#*:.@%aZ09 -~\"{}\x7f\xc3\xa9\xff"[..]), 0..24)
    ) {
        same_as_copied(&target);
    }
}

/// What an upstream request's final authority step made of a request: whether it passed, and
/// the URI, target and `Host` fields it left.
type Finished = (bool, String, Vec<u8>, Vec<Vec<u8>>);

fn finished(mut req: RequestHeader, had_host: bool, in_full: bool) -> Finished {
    let passed = if in_full {
        finish_h1_upstream_authority_in_full(&mut req, had_host)
    } else {
        finish_h1_upstream_authority(&mut req, had_host)
    }
    .is_ok();
    let hosts = req
        .headers
        .get_all(http::header::HOST)
        .iter()
        .map(|v| v.as_bytes().to_vec())
        .collect();
    (passed, req.uri.to_string(), req.raw_path().to_vec(), hosts)
}

/// The shortcut against the full checks, for one request: the ingress check's verdict, and
/// the upstream step's verdict and result, with and without `Host` before the filters.
/// Whether the request took the shortcut.
fn shortcut_agrees(method: &str, target: &[u8], hosts: &[&[u8]]) -> Option<bool> {
    let mut req = RequestHeader::build(method, target, None).ok()?;
    for host in hosts {
        req.append_header(http::header::HOST, *host).ok()?;
    }
    let ctx = format!(
        "{method} {:?} hosts {:?}",
        String::from_utf8_lossy(target),
        hosts
            .iter()
            .map(|h| String::from_utf8_lossy(h))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        validate_request_authority(&req).is_ok(),
        validate_request_authority_in_full(&req).is_ok(),
        "ingress: {ctx}"
    );
    for had_host in [true, false] {
        assert_eq!(
            finished(req.clone(), had_host, false),
            finished(req.clone(), had_host, true),
            "upstream, had Host {had_host}: {ctx}"
        );
    }
    Some(is_plain_origin_form(&req))
}

#[test]
fn a_plain_origin_form_request_skips_only_authority_checks_that_change_nothing() {
    let targets: [&[u8]; 12] = [
        b"/",
        b"/a/b?c=d",
        b"//evil.example/x",
        b"*",
        b"?q=1",
        b"http://h.example/x",
        b"http://u@h.example/x",
        b"h.example:443",
        b"https://h.example",
        b"http:/\\h.example/x",
        b"unix:/run/app.sock",
        b"/caf\xc3\xa9",
    ];
    let host_sets: [&[&[u8]]; 6] = [
        &[],
        &[b"h.example"],
        &[b"h.example", b"h.example"],
        &[b"u@h.example"],
        &[b"other.example"],
        &[b""],
    ];
    let mut plain = 0;
    for method in ["GET", "CONNECT", "OPTIONS"] {
        for target in targets {
            for hosts in host_sets {
                if shortcut_agrees(method, target, hosts) == Some(true) {
                    plain += 1;
                }
            }
        }
    }
    // GET and OPTIONS of the four origin-form targets, with one Host that is not userinfo.
    assert_eq!(plain, 2 * 4 * 3, "requests that took the shortcut");
    assert_eq!(shortcut_agrees("GET", b"/", &[b"app.example"]), Some(true));
}

/// `Host` values for the property below: plain, with a port, with userinfo, empty, other.
const SOME_HOSTS: &[&[u8]] = &[b"a.example", b"a.example:80", b"u@a", b"", b"Z"];

proptest! {
    #[test]
    fn any_request_gets_the_full_checks_verdict(
        target in proptest::collection::vec(prop::sample::select(&b"/?#*:.@%aZ09\\"[..]), 0..16),
        hosts in proptest::collection::vec(
            prop::sample::select(SOME_HOSTS), 0..3),
        connect in any::<bool>(),
    ) {
        shortcut_agrees(if connect { "CONNECT" } else { "GET" }, &target, &hosts);
    }
}
