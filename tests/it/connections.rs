//! HTTP/1.1 connections through the real binary: keep-alive, pipelining, the idle timeout,
//! and responses of every size on one connection. The gateway serves each connection itself
//! between requests (it waits for a request's first bytes before Pingora takes over, and
//! gathers each response into one write), so these pin down that nothing is lost doing so.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Gateway, Upstream, TLS_BASICS};

fn config(app: &Upstream, extra_server: &str) -> String {
    format!(
        r#"{}
[defaults]
headers = "strict-api"

[upstreams.app]
servers = ["{}"]

[[routes]]
name = "api"
path = "/api"
upstream = "app"
"#,
        TLS_BASICS.replace(
            "redirect_https = false",
            &format!("redirect_https = false\n{extra_server}")
        ),
        app.addr
    )
}

/// One response read off a raw connection: its head and its body (by Content-Length).
struct Answer {
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn status(&self) -> u16 {
        self.head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// Reads one response (head and Content-Length body) from `stream`, keeping what follows it
/// in `pending`.
async fn read_answer(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Answer {
    let deadline = Duration::from_secs(5);
    let head_end = loop {
        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(deadline, stream.read(&mut buf))
            .await
            .expect("a response within 5 s")
            .expect("read");
        assert!(
            n > 0,
            "closed mid-response: {:?}",
            String::from_utf8_lossy(pending)
        );
        pending.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&pending[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no Content-Length in {head}"));
    while pending.len() < head_end + length {
        let mut buf = [0u8; 16384];
        let n = tokio::time::timeout(deadline, stream.read(&mut buf))
            .await
            .expect("the body within 5 s")
            .expect("read");
        assert!(n > 0, "closed mid-body");
        pending.extend_from_slice(&buf[..n]);
    }
    let body = pending[head_end..head_end + length].to_vec();
    pending.drain(..head_end + length);
    Answer { head, body }
}

/// A raw connection to the gateway's plain listener.
async fn connect_plain(gw: &Gateway) -> TcpStream {
    TcpStream::connect(("127.0.0.1", gw.ports.http))
        .await
        .expect("connect to the plain listener")
}

/// `path` fetched from the TLS listener by `client`, which negotiates HTTP/2 there (checked).
async fn get_over_h2(client: &reqwest::Client, gw: &Gateway, path: &str) -> reqwest::Response {
    let r = client.get(gw.https_url(path)).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "{path}");
    r
}

/// Whether the gateway closes `stream` within `within` (reads return 0 or fail).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(within, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(n)) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(_) => false,
    }
}

/// An app, and the gateway in front of it with `header_read = "1s"` (and a long `idle`).
async fn start_with_header_read_1s() -> (Upstream, Gateway) {
    let app = Upstream::start("app").await;
    let gw = Gateway::start(&config(
        &app,
        "timeouts = { idle = \"30s\", header_read = \"1s\" }",
    ))
    .await;
    (app, gw)
}

/// Dribbles a byte every 200 ms on `s`, whose head `header_read = "1s"` must cut: it is
/// closed within 3.5 s (the deadline, and the next wake-up of a busy machine).
async fn assert_cut_while_dribbling(s: &mut TcpStream, what: &str) {
    let started = Instant::now();
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(4) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if s.write_all(b"a").await.is_err() || closed_within(s, Duration::ZERO).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "{what}");
    assert!(
        started.elapsed() < Duration::from_millis(3500),
        "{what}: cut after {:?}",
        started.elapsed()
    );
    assert_not_lingered(s, what).await;
}

/// The gateway closed `s` outright, without the lingering close that reads what a client
/// still sends: a slow client cut for its slowness is not waited on. Within 2 s a write
/// fails (the closed socket answers the first with a reset); a lingering close would take
/// them for 5 s.
async fn assert_not_lingered(s: &mut TcpStream, what: &str) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        if s.write_all(b"x").await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: writes still taken 2 s after the close");
}

/// A body that stalls longer than `body_read` gets the gateway's 400, and its connection is
/// closed outright.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_answered_and_its_connection_closed_outright() {
    let app = Upstream::start("app").await;
    let gw = Gateway::start(&config(&app, "timeouts = { body_read = \"1s\" }")).await;
    let mut s = connect_plain(&gw).await;
    s.write_all(
        b"POST /api/slow HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n0123456789",
    )
    .await
    .unwrap();
    let answer = read_answer(&mut s, &mut Vec::new()).await;
    assert_eq!(answer.status(), 400, "{}", answer.head);
    assert!(answer.json()["request_id"].is_string());
    assert!(closed_within(&mut s, Duration::from_secs(2)).await);
    assert_not_lingered(&mut s, "a stalled body").await;
}

/// Pipelining (RFC 9112 §9.3.2): requests sent before the first is answered are each served,
/// in order, on the one connection: those the gateway refuses itself, and one with a body,
/// included. The connection stays open for more. A refusal of a request whose body was not
/// read closes the connection: nothing behind that body is taken for a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let app = Upstream::start("app").await;
    let gw = Gateway::start(&config(&app, "")).await;
    let mut s = connect_plain(&gw).await;
    s.write_all(
        b"GET /api/one HTTP/1.1\r\nHost: localhost\r\n\r\n\
          GET /elsewhere HTTP/1.1\r\nHost: localhost\r\n\r\n\
          POST /api/two HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\r\nhello\
          POST /api/chunked HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n\
          3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n\
          GET /api/three HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await
    .unwrap();
    let mut pending = Vec::new();
    let one = read_answer(&mut s, &mut pending).await;
    assert_eq!(
        (one.status(), one.json()["path"].clone()),
        (200, "/api/one".into())
    );
    let refused = read_answer(&mut s, &mut pending).await;
    assert_eq!(refused.status(), 404, "no route: {}", refused.head);
    assert!(
        refused.json()["request_id"].is_string(),
        "the gateway's JSON 404"
    );
    let two = read_answer(&mut s, &mut pending).await;
    assert_eq!(
        (two.status(), two.json()["method"].clone()),
        (200, "POST".into())
    );
    assert_eq!(two.json()["path"], "/api/two");
    assert_eq!(
        two.json()["body_len"],
        5,
        "the body, and only it, went with its request"
    );
    let chunked = read_answer(&mut s, &mut pending).await;
    assert_eq!(chunked.json()["path"], "/api/chunked");
    assert_eq!(
        chunked.json()["body_len"],
        7,
        "a chunked body ends at its last chunk"
    );
    let three = read_answer(&mut s, &mut pending).await;
    assert_eq!(
        (three.status(), three.json()["path"].clone()),
        (200, "/api/three".into())
    );
    assert!(pending.is_empty(), "nothing more was sent");
    // Still open: the next request, sent on its own, is served.
    s.write_all(b"GET /api/four HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let four = read_answer(&mut s, &mut pending).await;
    assert_eq!(
        (four.status(), four.json()["path"].clone()),
        (200, "/api/four".into())
    );
    assert_eq!(app.hits(), 5, "each proxied request reached the app once");

    let mut s = connect_plain(&gw).await;
    s.write_all(
        b"POST /elsewhere HTTP/1.1\r\nHost: localhost\r\nContent-Length: 26\r\n\r\n\
          GET /api/hidden HTTP/1.1\r\n\
          GET /api/behind HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await
    .unwrap();
    let refused = read_answer(&mut s, &mut pending).await;
    assert_eq!(refused.status(), 404, "{}", refused.head);
    assert!(
        refused.head.contains("Connection: close"),
        "{}",
        refused.head
    );
    assert!(
        pending.is_empty() && closed_within(&mut s, Duration::from_secs(5)).await,
        "closed after the refusal, nothing else answered"
    );
    assert_eq!(app.hits(), 5, "nothing on that connection reached the app");
}

/// A pipelined head read in part with the request before it is followed from where it
/// stands: when its blank line comes in a later read, the head ends there (its answer is not
/// taken for a refusal of a head still being read), and when the rest never comes it is cut
/// at `header_read` like any other head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_head_split_across_reads_is_served_or_cut_at_header_read() {
    let (app, gw) = start_with_header_read_1s().await;
    let mut s = connect_plain(&gw).await;
    let mut pending = Vec::new();
    s.write_all(
        b"GET /api/one HTTP/1.1\r\nHost: localhost\r\n\r\n\
          GET /api/two HTTP/1.1\r\nHost: localhost\r\n",
    )
    .await
    .unwrap();
    let one = read_answer(&mut s, &mut pending).await;
    assert_eq!(one.json()["path"], "/api/one");
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(b"\r\n").await.unwrap();
    let two = read_answer(&mut s, &mut pending).await;
    assert_eq!(
        two.status(),
        200,
        "{}{:?}",
        two.head,
        String::from_utf8_lossy(&two.body)
    );
    assert_eq!(two.json()["path"], "/api/two");

    // The same, but the rest of the second head is dribbled.
    let mut s = connect_plain(&gw).await;
    s.write_all(
        b"GET /api/three HTTP/1.1\r\nHost: localhost\r\n\r\n\
          GET /api/four HTTP/1.1\r\nHost: localhost\r\nX-Slow: a",
    )
    .await
    .unwrap();
    let three = read_answer(&mut s, &mut pending).await;
    assert_eq!(three.json()["path"], "/api/three");
    assert_cut_while_dribbling(&mut s, "a dribbled pipelined head is cut at header_read").await;
    assert_eq!(app.hits(), 3, "the dribbled request never reached the app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_connection_serves_requests_until_idle_then_closes() {
    let app = Upstream::start("app").await;
    let gw = Gateway::start(&config(&app, "timeouts = { idle = \"1s\" }")).await;
    let mut s = connect_plain(&gw).await;
    let mut pending = Vec::new();
    for round in 0..3 {
        s.write_all(format!("GET /api/r{round} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let answer = read_answer(&mut s, &mut pending).await;
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.json()["path"], format!("/api/r{round}"));
        // Idle, but well within the timeout: the connection waits for the next request.
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let idle_from = Instant::now();
    assert!(
        closed_within(&mut s, Duration::from_secs(5)).await,
        "an idle keep-alive connection is closed after timeouts.idle"
    );
    assert!(
        idle_from.elapsed() >= Duration::from_millis(500),
        "closed too early: {:?}",
        idle_from.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_head_on_a_keep_alive_connection_is_under_header_read_too() {
    let (app, gw) = start_with_header_read_1s().await;
    let mut s = connect_plain(&gw).await;
    let mut pending = Vec::new();
    s.write_all(b"GET /api/first HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_answer(&mut s, &mut pending).await.status(), 200);
    // Idle longer than header_read: the wait between requests is the idle timeout's.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.write_all(b"GET /api/second HTTP/1.1\r\nHost: localhost\r\nX-Slow: a")
        .await
        .unwrap();
    assert_cut_while_dribbling(&mut s, "a dribbled second head is cut at header_read").await;
    assert_eq!(app.hits(), 1, "the dribbled request never reached the app");
}

/// A client that sends a whole upload before it reads (as Python's `http.client` and
/// `requests` do) gets the gateway's 413, whether the limit was seen in `Content-Length` before
/// the body was read or while a chunked body streamed: the connection is closed lingering,
/// reading and dropping the rest of the body, not reset under the answer (RFC 9112 §9.6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upload_is_answered_to_a_client_that_sends_it_whole() {
    let app = Upstream::start("app").await;
    let gw = Gateway::start(&config(&app, "max_body = \"1MiB\"")).await;
    const BODY: usize = 32 << 20;
    let chunk = vec![b'x'; 64 << 10];
    for chunked in [false, true] {
        let mut s = connect_plain(&gw).await;
        let framing = if chunked {
            "Transfer-Encoding: chunked".to_string()
        } else {
            format!("Content-Length: {BODY}")
        };
        s.write_all(
            format!("POST /api/upload HTTP/1.1\r\nHost: localhost\r\n{framing}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        for _ in 0..BODY / chunk.len() {
            let sent = if chunked {
                s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await
                    .and(s.write_all(&chunk).await)
                    .and(s.write_all(b"\r\n").await)
            } else {
                s.write_all(&chunk).await
            };
            sent.unwrap_or_else(|e| panic!("chunked {chunked}: the upload was cut: {e}"));
        }
        if chunked {
            s.write_all(b"0\r\n\r\n").await.unwrap();
        }
        let answer = read_answer(&mut s, &mut Vec::new()).await;
        assert_eq!(answer.status(), 413, "chunked {chunked}: {}", answer.head);
        assert!(answer.json()["request_id"].is_string());
        assert!(
            closed_within(&mut s, Duration::from_secs(5)).await,
            "chunked {chunked}: closed after the answer"
        );
    }
}

/// Empty lines before a request line are skipped (RFC 9112 §2.2) but are no head: a client
/// that sends them first is still cut at `header_read` if its head dribbles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_lines_before_a_head_do_not_stop_its_clock() {
    let (app, gw) = start_with_header_read_1s().await;
    let mut s = connect_plain(&gw).await;
    s.write_all(b"\r\n\r\nGET /api/slow HTTP/1.1\r\nHost: localhost\r\nX-Slow: a")
        .await
        .unwrap();
    assert_cut_while_dribbling(&mut s, "a head after empty lines is cut at header_read").await;
    // Sent whole, such a request is served.
    let mut s = connect_plain(&gw).await;
    s.write_all(b"\r\n\r\nGET /api/whole HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut s, &mut Vec::new()).await;
    assert_eq!(answer.json()["path"], "/api/whole");
    assert_eq!(app.hits(), 1, "the dribbled request never reached the app");
}

/// Request and response heads are parsed into slots the parser fills (pingora-core patch
/// 18): every field of a head with many comes through, in order, on a reused connection too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_with_many_fields_come_through_whole_both_ways() {
    let app = Upstream::start("app").await;
    let gw = Gateway::start(&config(
        &app,
        "max_headers = 250\nmax_header_bytes = \"32KiB\"",
    ))
    .await;
    let mut s = connect_plain(&gw).await;
    let mut pending = Vec::new();
    for (round, count) in [240usize, 3, 200].into_iter().enumerate() {
        let fields: String = (0..count)
            .map(|i| format!("X-Field-{i}: v{round}-{i}\r\n"))
            .collect();
        // As many back: under Pingora's 256 fields a response head, with the app's own three.
        s.write_all(
            format!("GET /api/many?fields={count} HTTP/1.1\r\nHost: localhost\r\n{fields}\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let answer = read_answer(&mut s, &mut pending).await;
        assert_eq!(answer.status(), 200, "{}", answer.head);
        let seen: Value = serde_json::from_slice(&answer.body).unwrap();
        let headers = seen["headers"].as_object().unwrap();
        for i in 0..count {
            assert_eq!(
                headers
                    .get(&format!("x-field-{i}"))
                    .and_then(|v| v.as_str()),
                Some(format!("v{round}-{i}").as_str()),
                "request field {i} of {count}"
            );
        }
        let head = answer.head.to_ascii_lowercase();
        let mut at = 0;
        for i in 0..count {
            let line = format!("\r\nx-app-field-{i}: value-{i}\r\n");
            let found = head[at..].find(&line);
            assert!(found.is_some(), "response field {i} of {count}, in order");
            at += found.unwrap_or(0) + 1;
        }
    }
    assert_eq!(app.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_and_small_responses_alternate_intact_on_one_connection() {
    let app = Upstream::start("app").await;
    let gw = Gateway::start(&config(&app, "")).await;
    let mut s = connect_plain(&gw).await;
    let mut pending = Vec::new();
    // The echo app reports the request's headers: a large header makes a large response.
    for (i, size) in [10usize, 6000, 10, 1400, 1500, 3, 7000]
        .into_iter()
        .enumerate()
    {
        let filler = "f".repeat(size);
        s.write_all(
            format!("GET /api/{i} HTTP/1.1\r\nHost: localhost\r\nX-Filler: {filler}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let answer = read_answer(&mut s, &mut pending).await;
        assert_eq!(answer.status(), 200, "{}", answer.head);
        let report = answer.json();
        assert_eq!(report["path"], format!("/api/{i}"));
        assert_eq!(report["headers"]["x-filler"], filler.as_str());
        assert!(
            answer.head.contains("X-Frame-Options: DENY")
                || answer.head.contains("x-frame-options: DENY"),
            "the policy headers on every response: {}",
            answer.head
        );
    }
    // The same over HTTPS (HTTP/1.1 and HTTP/2, through a real client).
    for http2 in [false, true] {
        let mut builder = gw.client_builder();
        builder = if http2 {
            builder.http2_prior_knowledge()
        } else {
            builder.http1_only()
        };
        let c = builder.build().unwrap();
        for size in [10usize, 6000, 1400, 3] {
            let filler = "f".repeat(size);
            let r = c
                .get(gw.https_url("/api/tls"))
                .header("x-filler", &filler)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let report: Value = r.json().await.unwrap();
            assert_eq!(report["headers"]["x-filler"], filler.as_str());
        }
    }
}

/// A WebSocket upstream in miniature: answers the upgrade with 101, then echoes every byte.
/// Reads one request head (up to its blank line) off an upstream's socket; `false` when the
/// gateway closed it or it broke first.
async fn read_request_head(s: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    true
}

async fn start_echo_upgrade_upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if !read_request_head(&mut s).await {
                    return;
                }
                let answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
                if s.write_all(answer).await.is_err() {
                    return;
                }
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// After `101 Switching Protocols` the connection carries frames both ways, for as long as
/// they come: none is taken for a request head (before, a frame sent after `header_read` got
/// the gateway's JSON 400 written into the stream), and nothing is cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_carries_frames_past_the_head_deadline() {
    let upstream = start_echo_upgrade_upstream().await;
    let gw = Gateway::start(&format!(
        r#"{}
[upstreams.ws]
servers = ["{upstream}"]

[[routes]]
name = "ws"
path = "/ws"
upstream = "ws"
"#,
        TLS_BASICS.replace(
            "redirect_https = false",
            "redirect_https = false\ntimeouts = { header_read = \"1s\" }"
        ),
    ))
    .await;
    let mut s = connect_plain(&gw).await;
    s.write_all(
        b"GET /ws/chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the 101 within 5 s")
            .unwrap();
        assert!(n > 0, "closed before the 101");
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).into_owned();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    for round in 0..3 {
        // A masked text frame, each after a pause longer than header_read.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let frame = [0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2, round];
        s.write_all(&frame).await.unwrap();
        let mut echoed = Vec::new();
        while echoed.len() < frame.len() {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .expect("the echo within 5 s")
                .unwrap();
            assert!(n > 0, "round {round}: the connection was closed");
            echoed.extend_from_slice(&buf[..n]);
        }
        assert_eq!(
            echoed, frame,
            "round {round}: the frame came back unchanged"
        );
    }
    let metrics = gw.metrics().await;
    assert!(
        metrics
            .contains("gateway_requests_rejected_total{reason=\"header_timeout\",route=\"-\"} 0\n"),
        "no header timeout counted on a WebSocket: {metrics}"
    );
}

/// Upstream keep-alive across the gateway's threads: a released upstream connection is watched
/// and reused on the thread that released it (the vendored pingora-core's idle watcher and a
/// per-thread pool key). Upstream Pingora watched it on a random thread; a request reusing it
/// from another thread then sometimes found it still held, logged `failed to acquire reusable
/// stream` and opened a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused_without_a_race_between_threads() {
    const CLIENTS: usize = 8;
    const REQUESTS: usize = 150;
    let app = Upstream::start("app").await;
    let gw = Gateway::start(&config(&app, "threads = 2")).await;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        // One client each: its own downstream keep-alive connection.
        let client = gw.client();
        let url = gw.http_url("/api/reuse");
        tasks.push(tokio::spawn(async move {
            for r in 0..REQUESTS {
                let response = client.get(&url).send().await.expect("request");
                assert_eq!(response.status(), 200, "client {c} request {r}");
                response.bytes().await.expect("body");
            }
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }
    assert_eq!(app.hits(), CLIENTS * REQUESTS);
    let stderr = gw.stderr();
    assert!(
        !stderr.contains("failed to acquire reusable stream"),
        "a reused upstream connection was raced for: {stderr}"
    );
    // Each thread keeps at most one connection per concurrent request on it.
    assert!(
        app.connections() <= 2 * CLIENTS,
        "{} upstream connections for {} requests from {CLIENTS} clients",
        app.connections(),
        CLIENTS * REQUESTS
    );
}

/// An intermediary sends its own HTTP version (RFC 9110 §6.2): a legacy upstream's HTTP/1.0
/// response reaches the client as HTTP/1.1, its body as the upstream framed it. An HTTP/1.0
/// status line with the `Transfer-Encoding` such an upstream may send anyway was refused by
/// clients (hyper: "unexpected transfer-encoding").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_1_0_upstream_is_answered_to_the_client_in_http_1_1() {
    let cases: [(&'static [u8], &str); 2] = [
        (
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
            "\r\n\r\nok",
        ),
        (
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            "\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ),
    ];
    for (answer, ending) in cases {
        let first = format!("{:?}", String::from_utf8_lossy(answer));
        let (addr, _opened, _closed) = start_answering_upstream(answer, Duration::ZERO).await;
        let gw = Gateway::start(&raw_upstream_config(addr, "threads = 1")).await;
        let mut s = connect_plain(&gw).await;
        s.write_all(b"GET /raw/x HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        // Read to the expected end: `read_answer` takes only a `Content-Length` body.
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !got.ends_with(ending.as_bytes()) && Instant::now() < deadline {
            let mut buf = [0u8; 4096];
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        let got = String::from_utf8_lossy(&got);
        assert!(
            got.starts_with("HTTP/1.1 200 OK\r\n"),
            "{first} answered as {got:?}"
        );
        assert!(got.ends_with(ending), "{first} answered as {got:?}");
        // And a client that checks the framing takes it.
        let r = gw.client().get(gw.http_url("/raw/x")).send().await;
        let r = r.unwrap_or_else(|e| panic!("{first}: {e}"));
        assert_eq!(r.version(), reqwest::Version::HTTP_11, "{first}");
        assert_eq!(r.text().await.unwrap(), "ok", "{first}");
    }
}

/// A client that asks in HTTP/1.0 cannot read chunked framing, and a server must not send it
/// (RFC 9112 §6.1): an upstream's chunked body reaches it as the bare body, ended by the
/// gateway closing the connection, even when the client asked to keep it alive. A body with a
/// length keeps its length, and the connection the client asked to keep. Before
/// pingora-core patch 35 the client got `Transfer-Encoding: chunked` and `2\r\nok\r\n0\r\n\r\n`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_1_0_client_gets_no_chunked_body() {
    const CHUNKED: &[u8] =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
    const SIZED: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let cases: [(&'static [u8], &str, &str); 4] = [
        (CHUNKED, "", "close"),
        (CHUNKED, "Connection: keep-alive\r\n", "close"),
        (SIZED, "", "close"),
        (SIZED, "Connection: keep-alive\r\n", "keep-alive"),
    ];
    for (answer, asked, connection) in cases {
        let case = format!("{:?} asked with {asked:?}", String::from_utf8_lossy(answer));
        let (addr, _opened, _closed) = start_answering_upstream(answer, Duration::ZERO).await;
        let gw = Gateway::start(&raw_upstream_config(addr, "threads = 1")).await;
        let mut s = connect_plain(&gw).await;
        let request = format!("GET /raw/x HTTP/1.0\r\nHost: localhost\r\n{asked}\r\n");
        s.write_all(request.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), async {
            // To the close, or to the sized body on a connection kept open.
            let mut buf = [0u8; 4096];
            while !(connection == "keep-alive" && got.ends_with(b"\r\n\r\nok")) {
                match s.read(&mut buf).await {
                    Ok(0) => return Ok(()),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
        .await;
        let text = String::from_utf8_lossy(&got).into_owned();
        assert!(
            matches!(read, Ok(Ok(()))),
            "{case}: {read:?} after {text:?}"
        );
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("{case}: no head in {text:?}"));
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{case}: {head}");
        let field = |name: &str| -> Vec<String> {
            head.lines()
                .filter_map(|l| l.split_once(':'))
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_string())
                .collect()
        };
        assert_eq!(
            field("transfer-encoding"),
            Vec::<String>::new(),
            "{case}: {head}"
        );
        assert_eq!(field("connection"), [connection], "{case}: {head}");
        assert_eq!(body, "ok", "{case}: {head}");
        if answer == SIZED {
            assert_eq!(field("content-length"), ["2"], "{case}: {head}");
        }
        if connection == "keep-alive" {
            // Still open: a second request on it is answered.
            s.write_all(request.as_bytes()).await.unwrap();
            let again = read_answer(&mut s, &mut Vec::new()).await;
            assert_eq!(again.status(), 200, "{case}: {}", again.head);
            assert_eq!(again.body, b"ok", "{case}");
        }
    }
}

/// A raw upstream that answers every request on a connection with `answer` and never closes a
/// connection itself. Counts the connections it was given and those the gateway closed.
async fn start_answering_upstream(
    answer: &'static [u8],
    delay: Duration,
) -> (std::net::SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let opened = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let (o, c) = (opened.clone(), closed.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            o.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                    // One answer per request head (the gateway sends GETs without a body).
                    while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        head.drain(..end + 4);
                        tokio::time::sleep(delay).await;
                        if s.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
                c.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, opened, closed)
}

/// Whether an upstream connection may be used again is the upstream's to say, in its
/// response's `Connection` header and HTTP version: the gateway reads them after handing the
/// response on (the vendored pingora-core keeps those headers, not a clone of every header).
/// An upstream that says `close` but leaves the socket open is closed by the gateway and never
/// sent a second request; one that keeps alive is reused, whichever valid form its
/// `Content-Length` takes. One that sends more than its
/// `Content-Length` (here a forged second response, in the same write) is never reused, and
/// the bytes past the body are never served: the vendored pingora-core gives a body that came
/// whole with its header a buffer of its own size (patch 11) and must still set them apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_response_decides_whether_its_connection_is_reused() {
    let cases: [(&'static [u8], bool); 13] = [
        // A `Content-Length` that says 2 in another valid form (RFC 9110 §8.6) frames the body
        // as 2 and leaves the connection reusable: the general parse of the vendored
        // pingora-core, which its fast path for one field of digits hands these to (patch 15).
        (b"HTTP/1.1 200 OK\r\nContent-Length: 02\r\n\r\nok", true),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok", true),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            false,
        ),
        // The vendored pingora-core consumes `Connection` as it parses the response and keeps
        // what it said (patch 25): in any spelling, the first field decides, as a lookup in
        // the header would find it.
        (
            b"HTTP/1.1 200 OK\r\nCONNECTION: Close\r\nContent-Length: 2\r\n\r\nok",
            false,
        ),
        (
            b"HTTP/1.1 200 OK\r\nconnection: keep-alive\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\nConnection: x-trace\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
            true,
        ),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
        // A chunked body ends at its last chunk, and its connection is reused; but an HTTP/1.0
        // response with `Transfer-Encoding` is closed whatever it says (RFC 9112 §6.1).
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            true,
        ),
        (
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            false,
        ),
        (
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok",
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=30\r\n\r\nok",
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged",
            false,
        ),
    ];
    for (answer, reused) in cases {
        let first = format!("{:?}", String::from_utf8_lossy(answer));
        let (addr, opened, closed) = start_answering_upstream(answer, Duration::ZERO).await;
        let gw = Gateway::start(&raw_upstream_config(addr, "threads = 1")).await;
        let client = gw.client();
        for i in 0..3 {
            let r = client.get(gw.http_url("/raw/x")).send().await.unwrap();
            assert_eq!(r.status(), 200, "{first}: request {i}");
            assert_eq!(r.text().await.unwrap(), "ok", "{first}: request {i}");
        }
        let want = if reused { 1 } else { 3 };
        assert_eq!(
            opened.load(Ordering::SeqCst),
            want,
            "upstream connections for three requests answered with {first}"
        );
        if !reused {
            // Every connection is closed by the gateway, though the upstream left it open.
            let deadline = Instant::now() + Duration::from_secs(5);
            while closed.load(Ordering::SeqCst) < 3 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(closed.load(Ordering::SeqCst), 3, "closed after {first}");
        }
    }
}

/// Header names reach an HTTP/1.1 client spelled as the upstream spelled them, whichever way
/// that is: the vendored pingora-http keeps no spellings map for a response whose names all
/// have their common spelling (`Content-Type`, `ETag`, `X-Title-Case`) and writes those
/// spellings itself, and makes the map at the first name spelled otherwise (lower case, upper
/// case, one name three ways). Over HTTP/2 names have no case; the values all arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_names_reach_the_client_spelled_as_the_upstream_sent_them() {
    let answers: [&'static [u8]; 3] = [
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nETag: \"v1\"\r\n\
          X-Upstream-Thing: 1\r\nWWW-Authenticate: Basic\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-First: 0\r\nx-lower: 1\r\n\
          X-UPPER: 2\r\nEtag: \"v1\"\r\nX-Title: 3\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nX-Multi: 1\r\nx-multi: 2\r\nX-MULTI: 3\r\nContent-Length: 2\r\n\r\nok",
    ];
    for answer in answers {
        let text = String::from_utf8_lossy(answer).into_owned();
        let (head, _) = text.split_once("\r\n\r\n").unwrap();
        let sent: Vec<&str> = head.lines().skip(1).collect();
        let (addr, _, _) = start_answering_upstream(answer, Duration::ZERO).await;
        let gw = Gateway::start(&raw_upstream_config(addr, "")).await;

        let mut s = TcpStream::connect(("127.0.0.1", gw.ports.http))
            .await
            .unwrap();
        s.write_all(b"GET /raw/x HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let got = read_answer(&mut s, &mut Vec::new()).await;
        assert_eq!(got.status(), 200, "{}", got.head);
        assert_eq!(got.body, b"ok");
        let lines: Vec<&str> = got.head.lines().collect();
        for line in &sent {
            assert!(
                lines.contains(line),
                "{line:?} not sent as the upstream spelled it:\n{}",
                got.head
            );
        }

        let r = get_over_h2(&gw.client(), &gw, "/raw/x").await;
        // Content-Length is the HTTP/2 framing's to give or not.
        for line in sent
            .iter()
            .filter(|l| !l.to_ascii_lowercase().starts_with("content-length"))
        {
            let (name, value) = line.split_once(": ").unwrap();
            let values: Vec<&str> = r
                .headers()
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            assert!(values.contains(&value), "{line:?} over HTTP/2: {values:?}");
        }
    }
}

/// A raw upstream that hands each request head it reads (up to the blank line) to the test,
/// and answers it `200 ok`.
async fn start_recording_upstream() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => pending.extend_from_slice(&buf[..n]),
                    }
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head: Vec<u8> = pending.drain(..end + 4).collect();
                        let _ = tx.send(String::from_utf8_lossy(&head[..end]).into_owned());
                        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if s.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// Header names reach the upstream spelled as the HTTP/1.1 client spelled them, whichever way
/// that is (title case, lower, upper, mixed, one name three ways): the vendored pingora-http
/// keeps no spellings map for a request and reads each name back from the head its value is a
/// slice of (pingora-core patch 27); a head with an empty value keeps the map instead. The
/// API key's field is left out; the fields the gateway writes itself (the forwarding headers)
/// are spelled as it spells them. Checked on one connection, request after request, so the
/// reused read buffer cannot lend one head's spellings to the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_names_reach_the_upstream_spelled_as_the_client_sent_them() {
    let (addr, mut heads) = start_recording_upstream().await;
    let extra = r#"
[api_keys.k]
header = "X-API-Key"
current = "k-3f9a1c0e7b5d2a4c6e8f0a1b"

[[routes]]
name = "keyed"
path = "/keyed"
upstream = "raw"
auth = { api_keys = "k" }
"#;
    let gw = Gateway::start(&(raw_upstream_config(addr, "") + extra)).await;
    let mut s = TcpStream::connect(("127.0.0.1", gw.ports.http))
        .await
        .unwrap();
    let mut pending = Vec::new();
    let requests: [(&str, &[&str]); 5] = [
        (
            "/raw/a",
            &[
                "Host: localhost",
                "User-Agent: t/1",
                "x-lower: 1",
                "X-UPPER: 2",
                "X-MiXeD-CaSe: 3",
                "accept: */*",
                "Content-Type: text/plain",
                "ETag-Like: 4",
            ],
        ),
        // One name three ways, each value on its own line.
        (
            "/raw/b",
            &["host: localhost", "X-Multi: 1", "x-multi: 2", "X-MULTI: 3"],
        ),
        // A value padded with whitespace, and one holding a colon.
        (
            "/raw/c",
            &["HOST: localhost", "x-padded:    5   ", "X-Colon: a: b"],
        ),
        // An empty value: the spellings map is kept.
        ("/raw/d", &["Host: localhost", "x-empty:", "x-after: 6"]),
        // The key's field never goes upstream, whatever its spelling.
        (
            "/keyed/e",
            &[
                "Host: localhost",
                "x-api-KEY: k-3f9a1c0e7b5d2a4c6e8f0a1b",
                "x-kept: 7",
            ],
        ),
    ];
    for (path, lines) in requests {
        let head = format!("GET {path} HTTP/1.1\r\n{}\r\n\r\n", lines.join("\r\n"));
        s.write_all(head.as_bytes()).await.unwrap();
        let got = read_answer(&mut s, &mut pending).await;
        assert_eq!(got.status(), 200, "{path}: {}", got.head);
        let seen = heads.recv().await.expect("the upstream saw the request");
        let seen_lines: Vec<&str> = seen.lines().collect();
        for line in lines.iter() {
            if line.to_ascii_lowercase().starts_with("x-api-key") {
                assert!(
                    !seen.to_ascii_lowercase().contains("x-api-key"),
                    "{path}: the key went upstream:\n{seen}"
                );
                continue;
            }
            // The upstream sees a field's value without the whitespace around it.
            let (name, value) = line.split_once(':').unwrap();
            let sent = format!("{name}: {}", value.trim());
            let sent = sent.trim_end();
            assert!(
                seen_lines.iter().any(|l| l.trim_end() == sent),
                "{path}: {line:?} not spelled as the client sent it:\n{seen}"
            );
        }
        // The gateway's own fields, as the gateway spells them.
        assert!(seen.contains("\r\nx-forwarded-for: "), "{path}:\n{seen}");
    }
}

/// Every HTTP/1.1 response carries one `Date`, the gateway's, and one `Connection` saying
/// what the gateway does with the connection, whatever the upstream sent in any spelling: the
/// vendored pingora-core writes both as lines after the response's own fields and removes the
/// response's copies (patch 23). A gateway-made answer gets the same two. A copy left in
/// would show as a second line here; the upstream's 1970 date as a stale one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_response_has_one_date_and_one_connection_the_gateways() {
    const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ndate: Thu, 01 Jan 1970 00:00:00 GMT\r\n\
        CONNECTION: keep-alive\r\nX-App: 1\r\nContent-Length: 2\r\n\r\nok";
    let (addr, _, _) = start_answering_upstream(ANSWER, Duration::ZERO).await;
    let gw = Gateway::start(&raw_upstream_config(addr, "")).await;
    let fields = |head: &str, name: &str| -> Vec<String> {
        head.lines()
            .filter_map(|l| l.split_once(": "))
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(n, v)| format!("{n}: {v}"))
            .collect()
    };
    let check_date = |head: &str| {
        let dates = fields(head, "date");
        assert_eq!(dates.len(), 1, "one Date:\n{head}");
        let now = time::OffsetDateTime::now_utc();
        let near: Vec<String> = (-5..=5)
            .map(|s| http_date(now + time::Duration::seconds(s)))
            .collect();
        let value = dates[0].strip_prefix("Date: ").unwrap_or(&dates[0]);
        assert!(
            near.iter().any(|d| d == value),
            "{value:?} is not now ({near:?})"
        );
    };

    let mut s = connect_plain(&gw).await;
    let mut pending = Vec::new();
    for (request, connection) in [
        (
            "GET /raw/x HTTP/1.1\r\nHost: localhost\r\n\r\n",
            "Connection: keep-alive",
        ),
        // Gateway-made: no route.
        (
            "GET /nothing HTTP/1.1\r\nHost: localhost\r\n\r\n",
            "Connection: keep-alive",
        ),
        (
            "GET /raw/x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            "Connection: close",
        ),
    ] {
        s.write_all(request.as_bytes()).await.unwrap();
        let got = read_answer(&mut s, &mut pending).await;
        check_date(&got.head);
        assert_eq!(
            fields(&got.head, "connection"),
            [connection],
            "{}",
            got.head
        );
        if got.status() == 200 {
            assert_eq!(fields(&got.head, "x-app"), ["X-App: 1"], "{}", got.head);
            assert_eq!(got.body, b"ok");
        }
    }
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "closed after Connection: close: {read:?}"
    );

    // HTTP/1.0 without keep-alive: closed.
    let mut s = connect_plain(&gw).await;
    s.write_all(b"GET /raw/x HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let got = read_answer(&mut s, &mut Vec::new()).await;
    check_date(&got.head);
    assert_eq!(
        fields(&got.head, "connection"),
        ["Connection: close"],
        "{}",
        got.head
    );
}

/// An IMF-fixdate (RFC 9110 §5.6.7): `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(t: time::OffsetDateTime) -> String {
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        &t.weekday().to_string()[..3],
        t.day(),
        &t.month().to_string()[..3],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// An HTTP/1.1 upstream's connection-specific headers (`Connection`, `Keep-Alive`,
/// `Proxy-Connection`, `Upgrade`, `Transfer-Encoding`) are its connection's, and HTTP/2
/// forbids them (RFC 9113 §8.2.2): an HTTP/2 client gets the response and its body without
/// any, and the app's other headers all arrive. The vendored pingora-core finds them in one
/// walk over the response's headers (patch 16); one missed would fail the stream in h2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_never_gets_the_upstreams_connection_headers() {
    let answers: [&'static [u8]; 3] = [
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nX-Before: 1\r\n\
          Keep-Alive: timeout=30\r\nContent-Length: 2\r\nX-After: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nProxy-Connection: keep-alive\r\nUpgrade: h2c\r\n\
          X-Before: 1\r\nConnection: Upgrade\r\nX-After: 2\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nX-Before: 1\r\nTransfer-Encoding: chunked\r\n\
          X-After: 2\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    ];
    for answer in answers {
        let first = String::from_utf8_lossy(answer).into_owned();
        let (addr, _, _) = start_answering_upstream(answer, Duration::ZERO).await;
        let gw = Gateway::start(&raw_upstream_config(addr, "")).await;
        let client = gw.client();
        for i in 0..2 {
            let r = get_over_h2(&client, &gw, "/raw/x").await;
            assert_eq!(r.status(), 200, "{first:?}: request {i}");
            for name in [
                "connection",
                "keep-alive",
                "proxy-connection",
                "upgrade",
                "transfer-encoding",
            ] {
                assert!(
                    r.headers().get(name).is_none(),
                    "{name} over HTTP/2 after {first:?}: {:?}",
                    r.headers()
                );
            }
            assert_eq!(r.headers()["x-before"], "1", "{first:?}");
            assert_eq!(r.text().await.unwrap(), "ok", "{first:?}: request {i}");
        }
    }
}

/// The fields an upstream's `Connection` nominates are its connection's, and a proxy removes
/// them before forwarding (RFC 9110 §7.6.1), wherever they stand in the response and however
/// they are spelled; the app's other fields all arrive, over HTTP/1.1 and HTTP/2, and a
/// nominated framing field (`Content-Length`) still frames the body. The vendored pingora-core
/// consumes `Connection` as it parses and removes what it nominated (patch 26).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fields_an_upstreams_connection_nominates_never_reach_the_client() {
    let answers: [(&'static [u8], &[&str]); 3] = [
        (
            b"HTTP/1.1 200 OK\r\nX-Hop: 1\r\nConnection: x-hop, X-OTHER\r\nX-Keep: 3\r\n\
              x-other: 2\r\nContent-Length: 2\r\n\r\nok",
            &["x-hop", "x-other"],
        ),
        (
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nX-Keep: 3\r\nX-Trace: 1\r\n\
              Connection: ,x-trace ,\r\nContent-Length: 2\r\n\r\nok",
            &["x-trace"],
        ),
        (
            b"HTTP/1.1 200 OK\r\nConnection: content-length, x-hop, bad token\r\nX-Hop: 1\r\n\
              X-Keep: 3\r\nContent-Length: 2\r\n\r\nok",
            &["x-hop"],
        ),
    ];
    for (answer, nominated) in answers {
        let first = String::from_utf8_lossy(answer).into_owned();
        let (addr, opened, _) = start_answering_upstream(answer, Duration::ZERO).await;
        let gw = Gateway::start(&raw_upstream_config(addr, "threads = 1")).await;

        let mut s = connect_plain(&gw).await;
        for i in 0..2 {
            s.write_all(b"GET /raw/x HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await
                .unwrap();
            let got = read_answer(&mut s, &mut Vec::new()).await;
            assert_eq!(got.status(), 200, "{first:?}: {}", got.head);
            assert_eq!(got.body, b"ok", "{first:?}: request {i}");
            let head = got.head.to_ascii_lowercase();
            assert!(
                head.contains("\r\nx-keep: 3\r\n"),
                "{first:?}:\n{}",
                got.head
            );
            for name in nominated {
                assert!(
                    !head.contains(&format!("\r\n{name}:")),
                    "{name} nominated by {first:?} reached the client:\n{}",
                    got.head
                );
            }
        }

        let r = get_over_h2(&gw.client(), &gw, "/raw/x").await;
        assert_eq!(r.headers()["x-keep"], "3", "{first:?}");
        for name in nominated {
            assert!(
                r.headers().get(*name).is_none(),
                "{name} over HTTP/2 after {first:?}: {:?}",
                r.headers()
            );
        }
        assert_eq!(r.text().await.unwrap(), "ok", "{first:?}");
        // A nomination says nothing of keep-alive: the upstream connection is kept.
        assert_eq!(opened.load(Ordering::SeqCst), 1, "{first:?}");
    }
}

fn raw_upstream_config(addr: std::net::SocketAddr, extra_server: &str) -> String {
    format!(
        r#"{}
[upstreams.raw]
servers = ["{addr}"]

[[routes]]
name = "raw"
path = "/raw"
upstream = "raw"
"#,
        TLS_BASICS.replace(
            "redirect_https = false",
            &format!("redirect_https = false\n{extra_server}")
        ),
    )
}

/// A route's response removals happen as Pingora parses the upstream's response (the vendored
/// pingora-core's `drop_response_fields`), decided per request: on one upstream connection a
/// route that strips and one that keeps everything take turns, and each gets its own answer,
/// whatever the names' spelling. The names the gateway sets itself go too, the app's
/// `RateLimit` only where the route sends its own. A policy's `remove` of the fields that
/// frame a response is a warning that does nothing: the body is read by its length and the
/// connection is used again. The fields that frame a response are never dropped there,
/// even when the policy removes them: the body is read by its length and the connection is
/// used again (read without its length, the response would never end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstreams_fields_are_stripped_as_it_is_parsed_per_route_and_its_framing_stays() {
    let answer = b"HTTP/1.1 200 OK\r\nSERVER: legacy/1.0\r\nX-Powered-By: PHP/5.2\r\n\
        x-drupal-cache: HIT\r\nContent-Type: text/plain\r\nKeep-Alive: timeout=30\r\n\
        X-Request-Id: from-the-app\r\nRateLimit: \"app\";r=1;t=1\r\n\
        RateLimit-Policy: \"app\";q=1;w=1\r\nConnection: keep-alive\r\n\
        Content-Length: 2\r\n\r\nok";
    let (addr, opened, _) = start_answering_upstream(answer, Duration::ZERO).await;
    let config = format!(
        r#"{}
[headers.framing]
preset = "baseline"
remove = ["content-length", "connection", "keep-alive", "transfer-encoding"]

[rate_limits.roomy]
key = "client_ip"
limit = 1000
per = "1m"

[[routes]]
name = "strip"
path = "/strip"
headers = "framing"
rate_limits = ["roomy"]
upstream = "raw"

[[routes]]
name = "keep"
path = "/keep"
headers = "none"
upstream = "raw"
"#,
        raw_upstream_config(addr, "threads = 1")
    );
    let gw = Gateway::start(&config).await;
    let h1 = gw.client_builder().http1_only().build().unwrap();
    for (client, what) in [(&h1, "HTTP/1.1"), (&gw.client(), "HTTP/2")] {
        for round in 0..2 {
            let what = format!("{what}, round {round}");
            let r = client.get(gw.https_url("/strip/x")).send().await.unwrap();
            assert_eq!(r.status(), 200, "{what}");
            let h = r.headers().clone();
            for gone in ["server", "x-powered-by", "x-drupal-cache"] {
                assert!(h.get(gone).is_none(), "{what}: {gone} in {h:?}");
            }
            assert_eq!(h["content-type"], "text/plain", "{what}");
            assert_eq!(h["x-frame-options"], "DENY", "{what}: the policy's own");
            let one = |name: &str| {
                let values: Vec<_> = h.get_all(name).iter().collect();
                assert_eq!(values.len(), 1, "{what}: {name}: {values:?}");
                values[0].to_str().unwrap().to_string()
            };
            assert_ne!(one("x-request-id"), "from-the-app", "{what}");
            assert!(one("ratelimit").starts_with("\"roomy\";r="), "{what}");
            assert_eq!(one("ratelimit-policy"), "\"roomy\";q=1000;w=60", "{what}");
            assert_eq!(r.text().await.unwrap(), "ok", "{what}");

            let r = client.get(gw.https_url("/keep/x")).send().await.unwrap();
            let h = r.headers().clone();
            assert_eq!(
                h["server"], "legacy/1.0",
                "{what}: the other route keeps it"
            );
            assert_eq!(h["x-powered-by"], "PHP/5.2", "{what}");
            assert_eq!(h["x-drupal-cache"], "HIT", "{what}");
            let ids: Vec<_> = h.get_all("x-request-id").iter().collect();
            assert_eq!(ids.len(), 1, "{what}: {ids:?}");
            assert_ne!(ids[0], "from-the-app", "{what}: the gateway's id");
            assert_eq!(
                h["ratelimit"], "\"app\";r=1;t=1",
                "{what}: no limits, the app's"
            );
            assert_eq!(r.text().await.unwrap(), "ok", "{what}");
        }
    }
    assert_eq!(
        opened.load(Ordering::SeqCst),
        1,
        "every request went over the one upstream connection"
    );
}

/// The vendored pingora-core's `drop_response_fields` drops what it is told to as it parses
/// an upstream's response, except the fields that frame it and decide its connection's reuse
/// (`Connection`, hop-by-hop, is consumed as it is parsed and what it said kept).
/// Told to drop everything, a real Pingora client session on a real socket still reads the
/// body by its length and keeps the connection for the next request. Without the guard the
/// body would be read until the upstream closes (it never does: the test times out) and the
/// connection could not be reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pingoras_client_never_drops_the_fields_that_frame_a_response() {
    use pingora_core::protocols::http::v1::client::HttpSession;
    let answer = b"HTTP/1.1 200 OK\r\nServer: legacy\r\nX-Powered-By: PHP\r\n\
        Keep-Alive: timeout=30\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok";
    let (addr, opened, _) = start_answering_upstream(answer, Duration::ZERO).await;
    let exchange = async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut stream: pingora_core::protocols::Stream =
            Box::new(pingora_core::protocols::l4::stream::Stream::from(tcp));
        for round in 0..2 {
            let mut session = HttpSession::new(stream);
            session.drop_response_fields(Some(Arc::new(|_: &http::HeaderName| true)));
            let mut req = pingora_http::RequestHeader::build("GET", b"/", None).unwrap();
            req.insert_header("Host", "upstream").unwrap();
            session.write_request_header(Box::new(req)).await.unwrap();
            session.read_response().await.unwrap();
            let names: Vec<String> = session
                .resp_header()
                .unwrap()
                .headers
                .keys()
                .map(|k| k.to_string())
                .collect();
            // `Connection` is consumed as it is parsed, what it said kept (patch 25).
            assert_eq!(names, ["keep-alive", "content-length"], "round {round}");
            let body = session.read_body_bytes().await.unwrap();
            assert_eq!(body.as_deref(), Some(&b"ok"[..]), "round {round}");
            assert!(session.read_body_bytes().await.unwrap().is_none());
            session.respect_keepalive();
            stream = session.reuse().await.expect("the connection is kept");
        }
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .expect("both responses within 5 s");
    assert_eq!(opened.load(Ordering::SeqCst), 1, "one connection for both");
}

/// `[server] upstream_keepalive` is how many idle upstream connections a thread keeps: four
/// requests at once need four connections; afterwards two are kept and two closed, and the
/// next four reuse the two kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_keepalive_caps_the_idle_upstream_connections() {
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    // Slow answers: all four requests are in flight at once, even on a loaded machine.
    let (addr, opened, closed) = start_answering_upstream(answer, Duration::from_secs(1)).await;
    let gw = Gateway::start(&raw_upstream_config(
        addr,
        "threads = 1\nupstream_keepalive = 2",
    ))
    .await;
    let burst = || async {
        let mut tasks = Vec::new();
        for i in 0..4 {
            // A client each: four client connections, four requests in flight at once.
            let client = gw.client();
            let url = gw.http_url("/raw/burst");
            tasks.push(tokio::spawn(async move {
                let r = client.get(url).send().await.expect("request");
                assert_eq!(r.status(), 200, "request {i}");
                assert_eq!(r.text().await.expect("body"), "ok", "request {i}");
            }));
        }
        for task in tasks {
            task.await.expect("client task");
        }
    };
    let settle = |want: usize| {
        let closed = closed.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(5);
            while closed.load(Ordering::SeqCst) < want && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Long enough for a wrong extra close to show.
            tokio::time::sleep(Duration::from_millis(300)).await;
            closed.load(Ordering::SeqCst)
        }
    };
    burst().await;
    assert_eq!(opened.load(Ordering::SeqCst), 4, "four requests at once");
    assert_eq!(settle(2).await, 2, "two of four idle connections closed");
    burst().await;
    assert_eq!(
        opened.load(Ordering::SeqCst),
        6,
        "the second burst reused the two kept connections"
    );
    assert_eq!(settle(4).await, 4, "again two of four closed");
}

/// A kept-alive upstream connection the upstream closes while it is idle is never used again,
/// and the gateway closes its end soon, even with no further request. The vendored
/// pingora-core parks a released connection on its thread for the next request (no task
/// watches it there) and moves it into the watched pool within a second: this pins down both
/// the check on taking a parked connection back and the move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_upstream_connection_the_upstream_closes_is_dropped_not_reused() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let opened = Arc::new(AtomicUsize::new(0));
    // Connections whose other end the gateway closed after the upstream closed its own.
    let closed_by_gateway = Arc::new(AtomicUsize::new(0));
    // Requests that arrived on a connection after the upstream closed its side of it.
    let sent_after_close = Arc::new(AtomicUsize::new(0));
    let (o, c, late) = (
        opened.clone(),
        closed_by_gateway.clone(),
        sent_after_close.clone(),
    );
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            o.fetch_add(1, Ordering::SeqCst);
            let (c, late) = (c.clone(), late.clone());
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if !read_request_head(&mut s).await {
                    return;
                }
                let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                if s.write_all(answer).await.is_err() {
                    return;
                }
                // Idle for a moment, then the upstream closes its side (a FIN, as a server
                // whose keep-alive timeout passed sends).
                tokio::time::sleep(Duration::from_millis(100)).await;
                if s.shutdown().await.is_err() {
                    return;
                }
                match s.read(&mut buf).await {
                    Ok(0) => {
                        c.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(_) => {
                        late.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => {}
                }
            });
        }
    });
    let gw = Gateway::start(&raw_upstream_config(addr, "threads = 1")).await;
    let client = gw.client();
    for i in 0..2 {
        let r = client.get(gw.http_url("/raw/x")).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.text().await.unwrap(), "ok", "request {i}");
        // Long enough for the upstream's FIN, short of the move into the watched pool.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        opened.load(Ordering::SeqCst),
        2,
        "the second request needed a new connection"
    );
    // The second connection is closed by the gateway with no request to find it closed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while closed_by_gateway.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        closed_by_gateway.load(Ordering::SeqCst),
        2,
        "both connections closed by the gateway after the upstream closed them"
    );
    assert_eq!(
        sent_after_close.load(Ordering::SeqCst),
        0,
        "no request on a connection the upstream had closed"
    );
}

/// SIGTERM: a keep-alive connection that waits for its next request is let linger (its
/// client may still send one), then closed when the linger ends, well before `timeouts.idle`
/// would close it; a request sent during the linger on another one is answered with
/// `Connection: close`. Both waits are the gateway's own connection loop's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_idle_keep_alive_connections_linger_then_closes_them() {
    let app = Upstream::start("app").await;
    let mut gw = Gateway::start(&config(
        &app,
        "shutdown_grace = \"30s\"\ntimeouts = { idle = \"60s\" }",
    ))
    .await;
    let mut idle = connect_plain(&gw).await;
    let mut late = connect_plain(&gw).await;
    let (mut pending_idle, mut pending_late) = (Vec::new(), Vec::new());
    for (s, pending) in [
        (&mut idle, &mut pending_idle),
        (&mut late, &mut pending_late),
    ] {
        s.write_all(b"GET /api/first HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_answer(s, pending).await.status(), 200);
    }
    let sent = Instant::now();
    gw.signal("TERM");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    late.write_all(b"GET /api/during HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut late, &mut pending_late).await;
    assert_eq!(
        answer.status(),
        200,
        "a request during the linger is served"
    );
    assert!(
        answer
            .head
            .to_ascii_lowercase()
            .contains("connection: close"),
        "and told to move on: {}",
        answer.head
    );
    assert!(
        closed_within(&mut idle, Duration::from_secs(9)).await,
        "the idle connection is closed when the linger ends, not after timeouts.idle"
    );
    let waited = sent.elapsed();
    assert!(
        waited >= Duration::from_secs(3),
        "closed before the linger ended: {waited:?}"
    );
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("exits once no connection is left");
    assert!(status.success(), "{status}");
}

/// The request-target reaches the upstream as the client sent it, in each form the read
/// buffer's bytes become the URI without a copy (pingora-core patch 24) and in the forms
/// still copied: a query, raw UTF-8, percent-escapes, a fragment (left off, RFC 9112 §3.2)
/// and absolute-form, one after another on one keep-alive connection, so each head's target
/// is read from a buffer the one before it no longer holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_form_of_request_target_reaches_the_upstream_as_sent() {
    let app = Upstream::start("app").await;
    let gw = Gateway::start(&config(&app, "")).await;
    let mut s = connect_plain(&gw).await;
    let mut pending = Vec::new();
    let cases: [(&[u8], &str, Option<&str>); 6] = [
        (
            b"/api/orders/42?expand=items&x",
            "/api/orders/42",
            Some("expand=items&x"),
        ),
        (
            b"/api/caf\xc3\xa9?q=\xc3\xa9",
            "/api/caf\u{e9}",
            Some("q=\u{e9}"),
        ),
        (b"/api/caf%C3%A9/a%20b", "/api/caf%C3%A9/a%20b", None),
        (b"/api/page?q=1#section", "/api/page", Some("q=1")),
        (b"/api/fragment#only", "/api/fragment", None),
        (
            b"http://localhost/api/absolute?z=1",
            "/api/absolute",
            Some("z=1"),
        ),
    ];
    for (target, path, query) in cases {
        let mut request = b"GET ".to_vec();
        request.extend_from_slice(target);
        request.extend_from_slice(b" HTTP/1.1\r\nHost: localhost\r\n\r\n");
        s.write_all(&request).await.unwrap();
        let answer = read_answer(&mut s, &mut pending).await;
        let shown = String::from_utf8_lossy(target);
        assert_eq!(answer.status(), 200, "{shown}: {}", answer.head);
        let seen = answer.json();
        assert_eq!(seen["path"], path, "{shown}");
        assert_eq!(seen["query"].as_str(), query, "{shown}");
    }
    assert_eq!(app.hits(), 6);
}

/// Every thread of process `pid`: its id, its name and its context switches so far (voluntary
/// ones are wake-ups from sleep).
fn thread_switches(pid: u32) -> Vec<(String, String, u64)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the gateway's threads");
    let mut threads = Vec::new();
    for task in tasks.flatten() {
        let dir = task.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let switches = status
            .lines()
            .filter_map(|line| {
                line.strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            })
            .filter_map(|n| n.trim().parse::<u64>().ok())
            .sum();
        let tid = task.file_name().to_string_lossy().into_owned();
        threads.push((tid, name.trim().to_string(), switches));
    }
    threads
}

/// A gateway with no request to serve sleeps: after requests of every kind (plain HTTP/1.1,
/// HTTPS over HTTP/1.1 and HTTP/2, a request body), no thread is left ticking. Pingora's own
/// timeouts ran on pingora-timeout's clock thread, started by the first connection and woken
/// every 10 ms from then on; with no active health check configured, the check loop wakes
/// once a second, not ten times. Each wake-up of a thread beside the request threads takes a
/// CPU they may want, and the kernel moves them to the other one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_gateway_wakes_no_thread_on_a_clock() {
    let app = Upstream::start("app").await;
    let gw = Gateway::start(&config(&app, "")).await;
    {
        let plain = reqwest::Client::builder().http1_only().build().unwrap();
        let r = plain.get(gw.http_url("/api/plain")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let r = plain
            .post(gw.http_url("/api/body"))
            .body(vec![b'x'; 20_000])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        for http2 in [false, true] {
            let builder = gw.client_builder();
            let client = if http2 {
                builder.http2_prior_knowledge()
            } else {
                builder.http1_only()
            }
            .build()
            .unwrap();
            let r = client.get(gw.https_url("/api/tls")).send().await.unwrap();
            assert_eq!(r.status(), 200);
        }
    }
    // The clients are gone with their connections; let the gateway see them close.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let clock = |threads: &[(String, String, u64)]| {
        assert!(
            !threads.iter().any(|(_, name, _)| name == "Timer thread"),
            "pingora-timeout's clock thread runs: {threads:?}"
        );
    };
    let mut before = thread_switches(gw.pid());
    clock(&before);
    // Two windows of a second, and the quieter one judged: a clock ticks in both, while a
    // one-off (a connection's close seen late, a page of the binary read in) is in one.
    let mut windows = Vec::new();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = thread_switches(gw.pid());
        clock(&after);
        let woken: Vec<(String, u64)> = after
            .iter()
            .map(|(tid, name, a)| {
                let b = before
                    .iter()
                    .find(|(t, _, _)| t == tid)
                    .map_or(0, |(_, _, b)| *b);
                (name.clone(), a - b.min(*a))
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        windows.push((woken.iter().map(|(_, n)| n).sum::<u64>(), woken));
        before = after;
    }
    eprintln!("idle, context switches per second: {windows:?}");
    // Idle, the old gateway woke about 120 times a second (the clock thread 100, the health
    // check loop 20); now about 5. The bound leaves room for the odd timer.
    let quieter = windows.iter().map(|(total, _)| *total).min().unwrap_or(0);
    assert!(
        quieter < 30,
        "idle, context switches per second: {windows:?}"
    );
}
