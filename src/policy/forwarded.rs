//! Who the client is, and what the upstream is told about it: the client IP (the socket peer,
//! or `X-Forwarded-For` walked right to left through trusted proxies only), the
//! `X-Forwarded-*` headers sent upstream, and the request id.

use std::fmt::Write;
use std::net::IpAddr;
use std::sync::LazyLock;

use http::HeaderValue;
use ipnet::IpNet;

use crate::config::diagnostics::Diagnostics;
use crate::config::KeyPath;
use crate::stack_str::StackStr;

#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    pub fn compile(list: &[String], path: &KeyPath, diags: &mut Diagnostics) -> TrustedProxies {
        let mut nets = Vec::new();
        for (i, text) in list.iter().enumerate() {
            let parsed = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => {
                    if net.prefix_len() == 0 {
                        diags.warn(path.index(i), format!("`{text}` trusts every address: any client can forge X-Forwarded-For"));
                    }
                    nets.push(net);
                }
                Err(_) => diags.error(
                    path.index(i),
                    format!("`{text}` is not an IP address or CIDR like \"10.0.0.0/8\""),
                ),
            }
        }
        TrustedProxies { nets }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are compared as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client address. From an untrusted peer it is the peer itself; from a trusted proxy it is
/// the right-most address in `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl DoubleEndedIterator<Item = &'a HeaderValue>,
    trusted: &TrustedProxies,
) -> IpAddr {
    let peer = canonical(peer);
    if !trusted.contains(peer) {
        return peer;
    }
    let mut client = peer;
    for value in forwarded_for.rev() {
        let Ok(text) = value.to_str() else {
            return client;
        };
        for hop in text.rsplit(',') {
            match parse_hop(hop) {
                Some(ip) => {
                    client = ip;
                    if !trusted.contains(ip) {
                        return ip;
                    }
                }
                // A hop we cannot read ends what we can believe.
                None => return client,
            }
        }
    }
    client
}

fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    // `1.2.3.4:5678` and `[::1]:5678` are seen in the wild.
    hop.parse::<std::net::SocketAddr>()
        .ok()
        .map(|s| canonical(s.ip()))
}

/// Headers in which a client claims where a request came from: believed from a trusted proxy
/// only, removed otherwise (the gateway sets `X-Forwarded-*` and `X-Real-IP` itself).
pub const PROXY_CLAIMS: &[&str] = &[
    "forwarded",
    "x-real-ip",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
];

/// Headers that make some frameworks act on another path or method than the one the gateway
/// checked (Symfony and IIS `X-Original-URL`, method overrides), and the identity headers the
/// gateway sets itself: never forwarded as the client sent them.
pub const NEVER_FORWARDED: &[&str] = &[
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    // The identity `auth` vouches for: only the gateway may say it.
    "x-palisade-key-id",
    "x-palisade-key-set",
    "x-palisade-key-roles",
];

/// The headers the gateway writes on every upstream request itself (after `auth`, also the
/// `x-palisade-key-*` ones in [`NEVER_FORWARDED`]): the client's copies never go through.
pub const GATEWAY_SET: &[&str] = &[
    "x-real-ip",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
];

/// What becomes of a client's header on its way upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Never forwarded ([`NEVER_FORWARDED`], [`GATEWAY_SET`]).
    Always,
    /// Forwarded from a trusted proxy only ([`PROXY_CLAIMS`]).
    Untrusted,
}

/// [`NEVER_FORWARDED`] and [`PROXY_CLAIMS`] in one header map: one lookup per request header
/// (the map hashes a standard name by its index), rather than a string compare per entry.
pub static DROPPED: LazyLock<http::HeaderMap<Dropped>> = LazyLock::new(|| {
    let mut map = http::HeaderMap::default();
    for name in PROXY_CLAIMS {
        map.insert(http::HeaderName::from_static(name), Dropped::Untrusted);
    }
    for name in NEVER_FORWARDED.iter().chain(GATEWAY_SET) {
        map.insert(http::HeaderName::from_static(name), Dropped::Always);
    }
    map
});

/// The `X-Forwarded-For` to send upstream: from an untrusted peer, the client IP alone (what the
/// client sent is dropped, so an app that trusts the left-most value cannot be fooled); from a
/// trusted proxy, what it sent (`sent`, asked only then) with the peer appended.
pub fn upstream_forwarded_for(
    peer: IpAddr,
    peer_trusted: bool,
    sent: impl FnOnce() -> Option<String>,
) -> ForwardedFor {
    let peer = canonical(peer);
    if peer_trusted {
        if let Some(existing) = sent() {
            let existing = existing.trim();
            if !existing.is_empty() {
                return ForwardedFor::Appended(format!("{existing}, {}", ip_text(peer)));
            }
        }
    }
    ForwardedFor::Peer(ip_text(peer))
}

/// An `X-Forwarded-For` value: the peer alone (on the stack: the common case costs no
/// allocation), or a trusted proxy's chain with the peer appended.
pub enum ForwardedFor {
    Peer(IpText),
    Appended(String),
}

impl ForwardedFor {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            ForwardedFor::Peer(ip) => ip.as_bytes(),
            ForwardedFor::Appended(chain) => chain.as_bytes(),
        }
    }
}

/// A request's id: 32 random hex digits, or a trusted proxy's when it is a sane token (1-128
/// letters, digits, `.`, `_` and `-`). Held inline, so a request's id costs no allocation, and
/// made only of bytes that a header line and a JSON string take as they are.
#[derive(Clone, Copy, Default)]
pub struct RequestId(StackStr<128>);

impl RequestId {
    /// The id's bytes, without the UTF-8 check of [`Self::as_str`].
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn is_empty(&self) -> bool {
        self.0.as_bytes().is_empty()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl serde::Serialize for RequestId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A request id from a trusted proxy is kept when it is a sane token; otherwise one is made.
pub fn request_id(sent: Option<&HeaderValue>, peer_trusted: bool) -> RequestId {
    if peer_trusted {
        if let Some(value) = sent {
            let bytes = value.as_bytes();
            let sane = bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            let mut id = RequestId::default();
            // Not empty, and at most 128 bytes: what fits.
            if sane && !bytes.is_empty() && id.0.push_ascii_bytes(bytes) {
                return id;
            }
        }
    }
    new_request_id()
}

/// 32 random hex digits.
pub fn new_request_id() -> RequestId {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 32];
    for (half, word) in digits
        .chunks_exact_mut(16)
        .zip([fastrand::u64(..), fastrand::u64(..)])
    {
        for (i, digit) in half.iter_mut().enumerate() {
            *digit = HEX[(word >> (60 - 4 * i)) as usize & 0xf];
        }
    }
    let mut id = RequestId::default();
    // ASCII, 32 bytes in 128: always taken.
    id.0.push_ascii_bytes(&digits);
    id
}

/// An address as text: 45 bytes hold the longest IPv6 form (39 as Rust writes it).
pub type IpText = StackStr<45>;

/// An address as text, as `to_string` writes it, on the stack (the client's for `X-Real-IP` and
/// the log line, the peer's for `X-Forwarded-For`: on every request); an IPv4 address without
/// the formatting machinery, which costs ten times more.
pub fn ip_text(ip: IpAddr) -> IpText {
    let mut text = IpText::new();
    let IpAddr::V4(v4) = ip else {
        // Fits: the longest IPv6 text is 45 bytes.
        let _ = write!(text, "{ip}");
        return text;
    };
    // Each octet's digits and a dot, into a buffer that holds four of `255.`.
    let mut buf = [0u8; 16];
    let mut n = 0;
    for octet in v4.octets() {
        if octet >= 100 {
            buf[n] = b'0' + octet / 100;
            n += 1;
        }
        if octet >= 10 {
            buf[n] = b'0' + octet / 10 % 10;
            n += 1;
        }
        buf[n] = b'0' + octet % 10;
        buf[n + 1] = b'.';
        n += 2;
    }
    // ASCII, and at most 15 bytes in 45: always taken.
    text.push_ascii_bytes(&buf[..n - 1]);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(list: &[&str]) -> TrustedProxies {
        let mut d = Diagnostics::default();
        let list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
        TrustedProxies::compile(&list, &KeyPath::root(), &mut d)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ip_text_writes_what_to_string_writes() {
        for text in [
            "0.0.0.0",
            "127.0.0.1",
            "10.9.99.100",
            "255.255.255.255",
            "192.168.1.20",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            assert_eq!(*ip_text(ip(text)), ip(text).to_string(), "{text}");
        }
        // Every octet value in every place.
        for octet in 0..=255u8 {
            for place in 0..4 {
                let mut octets = [1, 22, 133, 0];
                octets[place] = octet;
                let v4 = IpAddr::from(octets);
                assert_eq!(*ip_text(v4), v4.to_string());
            }
        }
        for text in [
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
            "::ffff:255.255.255.255",
            "1:2:3:4:5:6:7:8",
        ] {
            assert_eq!(*ip_text(ip(text)), ip(text).to_string(), "{text}");
        }
    }

    #[test]
    fn a_new_request_id_is_32_hex_digits_and_new_each_time() {
        let (a, b) = (new_request_id().to_string(), new_request_id().to_string());
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
        // All 128 bits are used: every digit position takes many values over a few ids.
        let ids: Vec<String> = (0..64).map(|_| new_request_id().to_string()).collect();
        for at in 0..32 {
            let seen: std::collections::HashSet<u8> =
                ids.iter().map(|id| id.as_bytes()[at]).collect();
            assert!(seen.len() > 4, "digit {at} took only {seen:?}");
        }
    }

    fn xff(values: &[&str]) -> Vec<HeaderValue> {
        values
            .iter()
            .map(|v| HeaderValue::from_str(v).unwrap())
            .collect()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = xff(&["1.1.1.1"]);
        assert_eq!(
            client_ip(ip("203.0.113.9"), h.iter(), &t),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_trusted_chain_is_walked_right_to_left_to_the_first_untrusted_hop() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = xff(&["6.6.6.6, 198.51.100.7", "10.1.1.1"]);
        assert_eq!(client_ip(ip("10.0.0.1"), h.iter(), &t), ip("198.51.100.7"));
    }

    #[test]
    fn garbage_in_the_chain_stops_the_walk() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = xff(&["1.2.3.4, bogus, 10.2.2.2"]);
        assert_eq!(client_ip(ip("10.0.0.1"), h.iter(), &t), ip("10.2.2.2"));
    }

    #[test]
    fn mapped_ipv6_peers_match_ipv4_ranges() {
        let t = trusted(&["127.0.0.1"]);
        let h = xff(&["192.0.2.1"]);
        assert_eq!(
            client_ip(ip("::ffff:127.0.0.1"), h.iter(), &t),
            ip("192.0.2.1")
        );
    }

    #[test]
    fn upstream_forwarded_for_drops_what_an_untrusted_client_sent() {
        let xff = |peer: &str, trusted: bool, sent: Option<&str>| {
            let sent = || sent.map(str::to_string);
            let value = upstream_forwarded_for(ip(peer), trusted, sent);
            String::from_utf8(value.as_bytes().to_vec()).unwrap()
        };
        assert_eq!(xff("203.0.113.9", false, Some("1.1.1.1")), "203.0.113.9");
        assert_eq!(xff("10.0.0.1", true, Some("1.1.1.1")), "1.1.1.1, 10.0.0.1");
        assert_eq!(xff("10.0.0.1", true, Some(" ")), "10.0.0.1");
        assert_eq!(xff("10.0.0.1", true, None), "10.0.0.1");
        // An IPv4-mapped peer is written as IPv4 on both paths.
        assert_eq!(xff("::ffff:10.0.0.1", false, None), "10.0.0.1");
        assert_eq!(
            xff("::ffff:10.0.0.1", true, Some("1.1.1.1")),
            "1.1.1.1, 10.0.0.1"
        );
    }

    #[test]
    fn request_ids_are_kept_only_from_trusted_peers_and_only_when_sane() {
        let good = HeaderValue::from_static("abc-123_x.y");
        let bad = HeaderValue::from_static("abc def");
        assert_eq!(request_id(Some(&good), true).as_str(), "abc-123_x.y");
        assert_ne!(request_id(Some(&good), false).as_str(), "abc-123_x.y");
        assert_ne!(request_id(Some(&bad), true).as_str(), "abc def");
        assert_eq!(new_request_id().as_str().len(), 32);
        // The longest id kept is 128 bytes; a longer one is replaced.
        let longest = HeaderValue::from_str(&"a".repeat(128)).unwrap();
        assert_eq!(request_id(Some(&longest), true).as_str(), "a".repeat(128));
        let longer = HeaderValue::from_str(&"a".repeat(129)).unwrap();
        assert_eq!(request_id(Some(&longer), true).as_str().len(), 32);
        let empty = HeaderValue::from_static("");
        assert_eq!(request_id(Some(&empty), true).as_str().len(), 32);
    }
}
