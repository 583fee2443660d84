//! The JSON access log: one line per request on stdout, written by a thread of its own so a
//! slow stdout never blocks a request. Lines are dropped (and counted) rather than queued
//! without bound when the writer falls behind.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Write;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::SystemTime;

use serde::Serialize;

use crate::policy::forwarded::{IpText, RequestId};
use crate::stack_str::StackStr;

/// A name from the config that every access log line carries (a route's, an upstream's, an
/// API key's id), with its JSON string form made once, at load: escaping it per request cost
/// about 100 instructions a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogName {
    text: Cow<'static, str>,
    /// `text` as a JSON string, quotes included.
    json: Cow<'static, [u8]>,
}

impl LogName {
    pub fn new(text: &str) -> LogName {
        let mut json = Vec::with_capacity(text.len() + 2);
        json_str(&mut json, text);
        LogName {
            text: Cow::Owned(text.to_owned()),
            json: Cow::Owned(json),
        }
    }

    /// A name that needs no escaping, for constants: `json` is `text` quoted (a unit test
    /// holds each constant to it).
    const fn plain(text: &'static str, json: &'static [u8]) -> LogName {
        LogName {
            text: Cow::Borrowed(text),
            json: Cow::Borrowed(json),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl Serialize for LogName {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

/// The upstream of a request that never reached one.
pub static NO_UPSTREAM: LogName = LogName::plain("", b"\"\"");

/// The route of a request that matched none ([`crate::metrics::NO_ROUTE`]).
pub static NO_ROUTE: LogName = LogName::plain(crate::metrics::NO_ROUTE, b"\"-\"");

/// One access log line. Never holds a secret: the path is logged without its query string.
#[derive(Serialize)]
pub struct AccessRecord<'a> {
    pub time: LogTime,
    pub request_id: &'a RequestId,
    pub client_ip: IpText,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub bytes: usize,
    pub duration_ms: Millis,
    pub route: &'a LogName,
    pub upstream: &'a LogName,
    /// What the gateway decided: `proxied`, or the policy that answered.
    pub decision: &'a str,
    /// The id of the API key that was accepted, when the route has `auth`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<&'a LogName>,
}

impl AccessRecord<'_> {
    /// The record as one JSON line, byte for byte what `serde_json` writes for it (a unit
    /// test holds the two together), without serde's per-field machinery: this runs on
    /// every request.
    pub fn to_line(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(320);
        let mut number = itoa::Buffer::new();
        out.extend_from_slice(b"{\"time\":");
        json_plain(&mut out, self.time.as_bytes());
        out.extend_from_slice(b",\"request_id\":");
        json_plain(&mut out, self.request_id.as_bytes());
        out.extend_from_slice(b",\"client_ip\":");
        json_plain(&mut out, self.client_ip.as_bytes());
        out.extend_from_slice(b",\"method\":");
        json_plain(&mut out, self.method.as_bytes());
        out.extend_from_slice(b",\"host\":");
        json_str(&mut out, self.host);
        out.extend_from_slice(b",\"path\":");
        json_str(&mut out, self.path);
        out.extend_from_slice(b",\"status\":");
        out.extend_from_slice(number.format(self.status).as_bytes());
        out.extend_from_slice(b",\"bytes\":");
        out.extend_from_slice(number.format(self.bytes).as_bytes());
        out.extend_from_slice(b",\"duration_ms\":");
        self.duration_ms.write(&mut out, &mut number);
        out.extend_from_slice(b",\"route\":");
        out.extend_from_slice(&self.route.json);
        out.extend_from_slice(b",\"upstream\":");
        out.extend_from_slice(&self.upstream.json);
        out.extend_from_slice(b",\"decision\":");
        json_str(&mut out, self.decision);
        if let Some(key_id) = self.key_id {
            out.extend_from_slice(b",\"key_id\":");
            out.extend_from_slice(&key_id.json);
        }
        out.extend_from_slice(b"}\n");
        out
    }
}

/// A JSON string that needs no escaping by how it was made: a [LogTime], an [IpText], a
/// [RequestId] (letters, digits, `.`, `_`, `-`), a method (a token: letters, digits and `!#$%&'*+-.^_`|~`, never a quote, a backslash or a
/// control character).
fn json_plain(out: &mut Vec<u8>, text: &[u8]) {
    debug_assert!(crate::scan::next_json_escape(text, 0).is_none());
    out.push(b'"');
    out.extend_from_slice(text);
    out.push(b'"');
}

/// A JSON string, escaped as `serde_json` escapes it.
fn json_str(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut start = 0;
    while let Some(i) = crate::scan::next_json_escape(bytes, start) {
        let b = bytes[i];
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            _ => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// A duration to the microsecond, logged as milliseconds: a JSON number with up to three
/// decimals, written as `serde_json` writes the `f64` (`1.5`, `0.001`, `2.0`) but with integer
/// arithmetic (the float formatting cost about 400 instructions a request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Millis {
    micros: u64,
}

impl Millis {
    /// Rounded to the nearest microsecond.
    pub fn of(duration: std::time::Duration) -> Millis {
        let nanos = duration.as_nanos() + 500;
        Millis {
            micros: u64::try_from(nanos / 1000).unwrap_or(u64::MAX),
        }
    }

    fn as_f64(self) -> f64 {
        self.micros as f64 / 1000.0
    }

    fn write(self, out: &mut Vec<u8>, number: &mut itoa::Buffer) {
        out.extend_from_slice(number.format(self.micros / 1000).as_bytes());
        out.push(b'.');
        let fraction = self.micros % 1000;
        // Digit by digit (each under 10); trailing zeros dropped, one kept for a whole number.
        let digit = |n: u64| b'0' + (n % 10) as u8;
        let digits = [digit(fraction / 100), digit(fraction / 10), digit(fraction)];
        let len = match fraction {
            f if f % 100 == 0 => 1,
            f if f % 10 == 0 => 2,
            _ => 3,
        };
        out.extend_from_slice(&digits[..len]);
    }
}

impl Serialize for Millis {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.as_f64())
    }
}

/// An audit event for an API key check, on the same stream as the access log. It names the
/// key by its id, never the key itself, and never holds the `Authorization` header.
#[derive(Serialize)]
pub struct AuthEvent<'a> {
    pub time: LogTime,
    /// Always `"auth"`: tells these lines from access records.
    pub event: &'static str,
    /// `info` for an accepted key, `warn` for a refusal.
    pub level: &'static str,
    pub request_id: &'a str,
    pub client_ip: IpText,
    pub route: &'a str,
    pub policy: &'a str,
    /// `ok`, `missing`, `invalid`, `expired` or `forbidden`.
    pub result: &'static str,
    /// The key's id, or `unknown`.
    pub key_id: &'a str,
    /// `current`, `next`, `named`, or `none`.
    pub set: &'static str,
}

pub struct AccessLog {
    tx: SyncSender<Vec<u8>>,
}

const QUEUE: usize = 16 * 1024;

impl AccessLog {
    pub fn to_stdout() -> AccessLog {
        let (tx, rx) = sync_channel(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(rx));
        if let Err(e) = spawned {
            log::error!("cannot start the access log writer: {e}");
        }
        AccessLog { tx }
    }

    /// Queues a line made elsewhere (ending in a newline); returns false when it had to be
    /// dropped.
    pub fn write_line(&self, line: Vec<u8>) -> bool {
        self.tx.try_send(line).is_ok()
    }

    /// Queues a line (an access record, or an audit event); returns false when it had to be
    /// dropped.
    pub fn write(&self, record: &impl Serialize) -> bool {
        let mut line = match serde_json::to_vec(record) {
            Ok(line) => line,
            Err(_) => return false,
        };
        line.push(b'\n');
        match self.tx.try_send(line) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
        }
    }
}

fn write_lines(rx: Receiver<Vec<u8>>) {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    while let Ok(line) = rx.recv() {
        let _ = out.write_all(&line);
        // Drain what is queued, then flush once; then let lines gather for a moment. Under
        // load this writes in batches and spares every request the cost of waking this
        // thread; when idle the first line is written at once.
        while let Ok(line) = rx.try_recv() {
            let _ = out.write_all(&line);
        }
        let _ = out.flush();
        std::thread::sleep(BATCH);
    }
}

/// How long the writer lets lines gather after a write.
const BATCH: std::time::Duration = std::time::Duration::from_millis(20);

/// A log line's time: RFC 3339 in UTC with milliseconds is 24 bytes (to the year 9999).
pub type LogTime = StackStr<24>;

/// The time now, RFC 3339 in UTC with milliseconds, for log lines. Formatted at most once per
/// millisecond per thread: a busy thread writes several lines in each.
pub fn rfc3339_now() -> LogTime {
    thread_local! {
        // No millisecond is u128::MAX: the first call always formats.
        static LAST: std::cell::Cell<(u128, LogTime)> = const {
            std::cell::Cell::new((u128::MAX, LogTime::new()))
        };
    }
    let now = SystemTime::now();
    let ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let (at, text) = LAST.get();
    if at == ms {
        return text;
    }
    let mut text = LogTime::new();
    // Fits until the year 10000.
    let _ = write!(text, "{}", humantime::format_rfc3339_millis(now));
    LAST.set((ms, text));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-thread cache gives the time now, to the millisecond, across milliseconds.
    #[test]
    fn the_log_time_is_now_to_the_millisecond() {
        for _ in 0..3 {
            let before = SystemTime::now();
            let text = rfc3339_now();
            let after = SystemTime::now();
            let logged = humantime::parse_rfc3339(&text).expect("RFC 3339");
            let ms = std::time::Duration::from_millis(1);
            assert!(
                logged <= after && logged + ms > before,
                "{text} is not between {before:?} and {after:?}"
            );
            assert!(text.ends_with('Z') && text.len() == 24, "{text}");
            std::thread::sleep(2 * ms);
        }
    }

    /// A trusted proxy's id, kept as sent.
    static ID: std::sync::LazyLock<RequestId> = std::sync::LazyLock::new(|| {
        let sent = http::HeaderValue::from_static("0123456789abcdef-._ABC");
        crate::policy::forwarded::request_id(Some(&sent), true)
    });

    fn record<'a>(
        text: &'a str,
        name: &'a LogName,
        duration_ms: Millis,
        key_id: Option<&'a LogName>,
    ) -> AccessRecord<'a> {
        AccessRecord {
            time: rfc3339_now(),
            request_id: &ID,
            client_ip: crate::policy::forwarded::ip_text([203, 0, 113, 7].into()),
            method: "GET",
            host: text,
            path: text,
            status: 404,
            bytes: 1234567,
            duration_ms,
            route: name,
            upstream: name,
            decision: "proxied",
            key_id,
        }
    }

    /// `json_plain` writes a method as it is: whatever byte `http` lets into a method is one
    /// JSON needs no escape for.
    #[test]
    fn no_method_needs_escaping() {
        for b in 0..=255u8 {
            if let Ok(method) = http::Method::from_bytes(&[b'X', b]) {
                let text = method.as_str();
                assert_eq!(serde_json::to_string(text).unwrap(), format!("\"{text}\""));
            }
        }
    }

    #[test]
    fn a_line_is_what_serde_json_writes() {
        let all_controls: String = (0u8..0x20).map(char::from).collect();
        for text in [
            "/plain",
            "",
            "quote\" backslash\\ slash/",
            "tab\tnewline\nreturn\rback\u{8}feed\u{c}",
            all_controls.as_str(),
            "del\u{7f} unicode é 日本 \u{2028} emoji 🦀",
        ] {
            for micros in [0, 1, 1000, 12345, 12340, 12300, 123456789125] {
                let duration_ms = Millis { micros };
                let name = LogName::new(text);
                let key = LogName::new("ops-\"key\"");
                for key_id in [None, Some(&key)] {
                    let r = record(text, &name, duration_ms, key_id);
                    let mut expected = serde_json::to_vec(&r).unwrap();
                    expected.push(b'\n');
                    assert_eq!(
                        String::from_utf8(r.to_line()).unwrap(),
                        String::from_utf8(expected).unwrap()
                    );
                }
            }
        }
    }

    /// The constant names' JSON forms are their texts as `serde_json` writes them.
    #[test]
    fn constant_names_are_written_as_serde_json_writes_them() {
        for name in [&NO_ROUTE, &NO_UPSTREAM] {
            assert_eq!(name.json, serde_json::to_vec(name).unwrap(), "{name:?}");
            assert_eq!(*name, LogName::new(name.as_str()));
        }
    }

    /// Milliseconds are written as `serde_json` writes the `f64` (the shortest text that reads
    /// back as it), for every fraction and for large values.
    #[test]
    fn a_duration_is_written_as_its_f64() {
        let mut number = itoa::Buffer::new();
        let wholes = [
            0,
            1,
            9,
            10,
            999,
            1_000,
            86_400_000,
            123_456_789,
            4_000_000_000_000,
        ];
        for whole in wholes {
            for fraction in 0..1000 {
                let ms = Millis {
                    micros: whole * 1000 + fraction,
                };
                let mut out = Vec::new();
                ms.write(&mut out, &mut number);
                let expected = serde_json::to_string(&ms.as_f64()).unwrap();
                assert_eq!(String::from_utf8(out).unwrap(), expected, "{ms:?}");
            }
        }
    }

    #[test]
    fn a_duration_rounds_to_the_microsecond() {
        use std::time::Duration;
        assert_eq!(Millis::of(Duration::from_nanos(1_499)).micros, 1);
        assert_eq!(Millis::of(Duration::from_nanos(1_500)).micros, 2);
        assert_eq!(Millis::of(Duration::from_secs(3)).micros, 3_000_000);
    }
}
