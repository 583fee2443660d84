//! Lookups in the vendored `http`'s `HeaderMap`: in a map of a few names a lookup compares the
//! key with each name instead of hashing it (its patch 1), and a lookup by `HeaderName` for a
//! name the map's filter has never seen answers at once (patch 2). Whatever the map's size,
//! its names' forms (standard or custom, custom ones of lengths that share a filter bit),
//! their repeats and removals, how the map was emptied or copied, and the key's type and case,
//! `get`, `get_all`, `get_mut` and `contains_key` must answer what a plain walk over the map's
//! fields answers.
use http::header::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

/// Standard names, custom names (some of one length, so only their bytes tell them apart),
/// and names absent from every map built here.
const NAMES: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "date",
    "accept",
    "user-agent",
    "x-api-key",
    "x-api-kez",
    "x-request-id",
    "x-forwarded-for",
    "sec-fetch-mode",
    // 41 bytes: the same bit of the name filter (patch 2) as `x-api-key`'s 9
    "x-custom-header-forty-one-characters-long",
];
const ABSENT: &[&str] = &[
    "upgrade",
    "cookie",
    "x-api-kex",
    "x-never-sent",
    "x-custom-header-forty-one-characters-lonh",
];

/// What a walk over the fields says the values of `name` are, in order.
fn walked(map: &HeaderMap, name: &str) -> Vec<HeaderValue> {
    map.iter()
        .filter(|(n, _)| n.as_str() == name)
        .map(|(_, v)| v.clone())
        .collect()
}

fn check(map: &HeaderMap) -> Result<(), TestCaseError> {
    for &name in NAMES.iter().chain(ABSENT) {
        let want = walked(map, name);
        let parsed = HeaderName::from_static(name);
        let upper = name.to_ascii_uppercase();
        prop_assert_eq!(map.get(&parsed), want.first(), "get {}", name);
        prop_assert_eq!(map.get(parsed.clone()), want.first(), "get owned {}", name);
        prop_assert_eq!(map.get(name), want.first(), "get str {}", name);
        prop_assert_eq!(map.get(upper.as_str()), want.first(), "get upper {}", name);
        prop_assert_eq!(map.get(&upper), want.first(), "get &String {}", name);
        prop_assert_eq!(
            map.contains_key(&parsed),
            !want.is_empty(),
            "contains {}",
            name
        );
        prop_assert_eq!(
            map.contains_key(name),
            !want.is_empty(),
            "contains str {}",
            name
        );
        let all: Vec<HeaderValue> = map.get_all(&parsed).iter().cloned().collect();
        prop_assert_eq!(&all, &want, "get_all {}", name);
        let all: Vec<HeaderValue> = map.get_all(upper.clone()).iter().cloned().collect();
        prop_assert_eq!(&all, &want, "get_all String {}", name);
    }
    Ok(())
}

/// One change to a map: append or insert a value under a name (or through its entry), remove
/// a name, empty the map (`clear`, `drain`), or replace it with its clone.
#[derive(Debug, Clone)]
enum Op {
    Append(usize, u8),
    Insert(usize, u8),
    Entry(usize, u8),
    Remove(usize),
    Clear,
    Drain,
    Clone,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..NAMES.len(), any::<u8>()).prop_map(|(n, v)| Op::Append(n, v)),
        2 => (0..NAMES.len(), any::<u8>()).prop_map(|(n, v)| Op::Insert(n, v)),
        1 => (0..NAMES.len(), any::<u8>()).prop_map(|(n, v)| Op::Entry(n, v)),
        1 => (0..NAMES.len()).prop_map(Op::Remove),
        1 => Just(Op::Clone),
        // one in ten, so that most maps still grow past the few names a lookup walks
        1 => prop_oneof![Just(Op::Clear), Just(Op::Drain)],
    ]
}

proptest! {
    #[test]
    fn lookups_answer_what_a_walk_over_the_fields_answers(ops in proptest::collection::vec(op(), 0..32)) {
        let mut map = HeaderMap::new();
        check(&map)?;
        for op in ops {
            match op {
                Op::Append(n, v) => {
                    map.append(HeaderName::from_static(NAMES[n]), HeaderValue::from(u16::from(v)));
                }
                Op::Insert(n, v) => {
                    map.insert(HeaderName::from_static(NAMES[n]), HeaderValue::from(u16::from(v)));
                }
                Op::Entry(n, v) => {
                    map.entry(HeaderName::from_static(NAMES[n]))
                        .or_insert(HeaderValue::from(u16::from(v)));
                }
                Op::Remove(n) => {
                    map.remove(NAMES[n]);
                }
                Op::Clear => map.clear(),
                Op::Drain => {
                    let fields = map.len();
                    prop_assert_eq!(map.drain().count(), fields);
                    prop_assert!(map.is_empty());
                }
                Op::Clone => map = map.clone(),
            }
            check(&map)?;
        }
        // `get_mut` changes the first value of the name it finds, and only that one.
        for &name in NAMES.iter().chain(ABSENT) {
            let before = walked(&map, name);
            let mut changed = before.clone();
            if let Some(v) = map.get_mut(HeaderName::from_static(name)) {
                *v = HeaderValue::from_static("changed");
                changed[0] = HeaderValue::from_static("changed");
            }
            prop_assert_eq!(walked(&map, name), changed, "get_mut {}", name);
        }
    }
}
