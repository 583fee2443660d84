//! The request line of an HTTP/1.x request, built from slices of the buffer it was read into
//! (pingora-http's `RequestHeader::build_boxed_shared`, patch 24): an origin-form target
//! becomes the URI without a copy, and every target is stored as `build_boxed`, which copies,
//! stores it: the same URI, the same wire form, the same errors.
use bytes::Bytes;
use pingora_http::RequestHeader;
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
