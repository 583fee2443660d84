//! `timeouts.header_read`: a total deadline for reading an HTTP/1.1 request head.
//!
//! Pingora times each read of a request head on its own, so a slowloris that sends a byte
//! every few seconds keeps a connection (and its memory) forever. This wraps the client
//! connection and watches the bytes it reads: a head must be complete (its blank line read)
//! within `header_read` — counted from the accept for the first request, and from the first
//! byte of each later request on a keep-alive connection (the wait between requests is the
//! `idle` timeout's). Past the deadline, reads fail and Pingora closes the connection.
//!
//! A head ends at its empty line; what follows is the body, which has no deadline here
//! (`body_read` times each of its reads), and neither is anything read until the connection
//! loop says the request was answered and the connection kept ([`HeadDeadline::next_request`]):
//! the next head begins with the first byte read after that. So a body read after its
//! response started, and the frames of an upgraded (WebSocket) connection, are never taken
//! for a head.
//!
//! Pingora answers a head it cannot parse or refuses (obs-fold, a bad `Content-Length`, a
//! space before a colon, ...) with its own bare 400 — written while the head is still being
//! read, or as the first thing after it, in the fixed shape of Pingora's error responses.
//! That answer is replaced by the gateway's JSON error with a request id and the security
//! headers, so every refusal looks the same to a client.
//!
//! Two things keep an idle keep-alive connection small: the wait for the next request reads
//! its first bytes through [`Peek::try_peek`] (the connection loop in `background.rs` hands the
//! connection to Pingora only then), and a response is gathered into one write in a buffer
//! that exists only until the response is flushed.

use std::fmt;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    GatherHead, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest,
    Ssl, Stream, TimingDigests, UniqueID, UniqueIDType, ALPN,
};
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Where the connection is in its request/response cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a head that must be complete by the deadline. `tail` holds the last two bytes
    /// read, to find the blank line across reads; `started`, whether a byte of the request
    /// line came (the empty lines before it neither start the head nor end it).
    Head {
        deadline: Instant,
        tail: [u8; 2],
        started: bool,
    },
    /// The head is read: body and response, no deadline here.
    Body,
    /// The request was answered and the connection waits for the next one (see
    /// [`HeadDeadline::next_request`]); the next byte read begins its head.
    Between,
}

pub struct HeadDeadline {
    inner: Stream,
    phase: Phase,
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    expired: IntCounter,
    counted: bool,
    /// Builds the gateway's answer to a head Pingora refused, and counts it.
    bad_head: Option<BadHead>,
    /// That answer, and how much of it is written.
    replacing: Option<(Vec<u8>, usize)>,
    /// Bytes read ahead by [`Peek::try_peek`] (the wait for a request's first bytes), and how
    /// many of them were handed on; the next reads return them first.
    ahead: Option<(Vec<u8>, usize)>,
    /// Response bytes gathered into one write, and how many of them are written. Pingora
    /// writes a response head (serialized straight into this buffer, see [`GatherHead`]) and
    /// its body separately, then flushes: they leave together.
    /// Allocated when a response starts and freed at its flush, so an idle connection holds
    /// none (this replaces Pingora's write buffer, 1460 bytes on every open connection, which
    /// is off on the plain listeners).
    out: Vec<u8>,
    out_sent: usize,
    /// Set once the connection is being closed (see [`HeadDeadline::poll_close`]).
    closing: Option<Linger>,
}

/// Where a closing connection is: when it stops waiting for the client, and whether the
/// client was sent the end of the stream.
#[derive(Debug, Clone, Copy)]
struct Linger {
    until: Instant,
    idle_until: Instant,
    fin_sent: bool,
}

/// The most [`HeadDeadline`] gathers before writing: a response head and a small body.
const GATHER: usize = 1460;

/// How long a closing connection goes on reading, and dropping, what the client still sends:
/// in all, and since the last bytes came (nginx's `lingering_time` and `lingering_timeout`).
const LINGER: Duration = Duration::from_secs(30);
const LINGER_IDLE: Duration = Duration::from_secs(5);

/// How much of what a closing connection's client still sends is read (and dropped) at once.
const LINGER_READ: usize = 16 * 1024;

/// The most a wait for a request's first bytes reads ahead: a typical request head whole.
const READ_AHEAD: usize = 2048;

/// How Pingora's own answer to a head it refuses starts (`gen_error_response(400)`).
const PINGORA_400: &[u8] = b"HTTP/1.1 400 Bad Request\r\nServer: Pingora\r\n";

/// Makes the bytes of the gateway's answer to an unparsable head, given whether the
/// connection is HTTPS. Built once and shared by every connection.
pub type BadHead = Arc<dyn Fn(bool) -> Vec<u8> + Send + Sync>;

impl HeadDeadline {
    /// Wraps a new HTTP/1.1 connection, whose first head is due within `limit` of now.
    pub fn wrap(
        inner: Stream,
        limit: Duration,
        expired: IntCounter,
        bad_head: Option<BadHead>,
    ) -> Box<HeadDeadline> {
        Box::new(HeadDeadline {
            inner,
            phase: Phase::Head {
                deadline: Instant::now() + limit,
                tail: [0; 2],
                started: false,
            },
            limit,
            timer: None,
            expired,
            counted: false,
            bad_head,
            replacing: None,
            ahead: None,
            out: Vec::new(),
            out_sent: 0,
            closing: None,
        })
    }

    /// Writes the replacement for Pingora's bare answer to an unparsable head, and claims
    /// `claimed` bytes of Pingora's own as written. `None` when there is nothing to replace.
    fn poll_replace(
        &mut self,
        cx: &mut Context<'_>,
        first: &[u8],
        claimed: usize,
    ) -> Option<Poll<io::Result<usize>>> {
        if self.replacing.is_none() {
            let refusal = match self.phase {
                Phase::Head { .. } => true,
                Phase::Body => first.starts_with(PINGORA_400),
                Phase::Between => false,
            };
            if !refusal {
                return None;
            }
            let make = self.bad_head.as_ref()?;
            self.replacing = Some((make(self.inner.get_ssl_digest().is_some()), 0));
        }
        let (bytes, at) = self.replacing.as_mut()?;
        while *at < bytes.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*at..]) {
                Poll::Ready(Ok(0)) => {
                    return Some(Poll::Ready(Err(io::ErrorKind::WriteZero.into())))
                }
                Poll::Ready(Ok(n)) => *at += n,
                Poll::Ready(Err(e)) => return Some(Poll::Ready(Err(e))),
                Poll::Pending => return Some(Poll::Pending),
            }
        }
        Some(Poll::Ready(Ok(claimed)))
    }

    /// The request was answered and the connection is kept: the next byte read begins a new
    /// head. Told by the connection loop, not guessed from the bytes written: a response may
    /// start before its request's body is read (an early answer, an upload answered as it
    /// streams), and after `101 Switching Protocols` the bytes are frames, never a head.
    ///
    /// `ahead`: the bytes read with the last request that follow it (pipelined), already past
    /// this stream and handed to the next session. The next head is followed from there:
    /// complete, or due within `limit` of now, its blank line found even when it is split
    /// between these bytes and the next read. `true` when they begin a request; empty lines
    /// alone (a client's stray CRLF after a body) do not, and the connection waits for its
    /// next request as usual.
    pub fn next_request(&mut self, ahead: Option<&[u8]>) -> bool {
        if self.phase != Phase::Body {
            return false;
        }
        self.phase = Phase::Between;
        match ahead.map(skip_empty_lines) {
            Some(ahead) if !ahead.is_empty() => {
                self.observe(ahead);
                true
            }
            _ => false,
        }
    }

    /// Waits until the client sends something: the bytes are read (under the head deadline,
    /// like any read) and kept for the next reads. The connection holds no buffer while it
    /// waits. `Ok(false)`: the client closed, there is no request to come.
    pub async fn wait_readable(&mut self) -> io::Result<bool> {
        if self.ahead.is_some() {
            return Ok(true);
        }
        let read = std::future::poll_fn(|cx| {
            // On the stack only while polled, and not zeroed first (2 KB on every poll, the
            // waiting ones too): the read fills what it reports. The bytes are followed
            // (`observe`) when they are handed on.
            let mut chunk = [MaybeUninit::<u8>::uninit(); READ_AHEAD];
            let mut read = ReadBuf::uninit(&mut chunk);
            ready!(self.poll_read_timed(cx, &mut read))?;
            Poll::Ready(Ok::<_, io::Error>(read.filled().to_vec()))
        })
        .await?;
        if read.is_empty() {
            return Ok(false);
        }
        self.ahead = Some((read, 0));
        Ok(true)
    }

    /// Writes out what is gathered.
    fn poll_send_gathered(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_sent < self.out.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.out[self.out_sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.out_sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.out.clear();
        self.out_sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Gathers `bufs` (as one write of their total) when they fit; otherwise writes out what
    /// is gathered, then `bufs` straight through.
    fn poll_gather(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
        total: usize,
    ) -> Poll<io::Result<usize>> {
        if self.out.len() + total > GATHER {
            ready!(self.poll_send_gathered(cx))?;
            if total > GATHER {
                return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
            }
        }
        if self.out.capacity() == 0 {
            self.out.reserve_exact(GATHER);
        }
        for buf in bufs {
            self.out.extend_from_slice(buf);
        }
        Poll::Ready(Ok(total))
    }

    /// Whether `stream` speaks HTTP/1.x (HTTP/2 has no request heads to dribble).
    pub fn applies_to(stream: &Stream) -> bool {
        !matches!(stream.selected_alpn_proto(), Some(ALPN::H2))
    }

    fn timed_out(&mut self) -> io::Error {
        if !self.counted {
            self.counted = true;
            self.expired.inc();
        }
        io::Error::new(
            io::ErrorKind::TimedOut,
            "the request head was not complete within timeouts.header_read",
        )
    }

    /// Follows the bytes handed on: a head starts, or its blank line ends it.
    fn observe(&mut self, read: &[u8]) {
        if read.is_empty() {
            return;
        }
        let (deadline, tail, started) = match self.phase {
            Phase::Body => return,
            Phase::Between => (None, [0; 2], false),
            Phase::Head {
                deadline,
                tail,
                started,
            } => (Some(deadline), tail, started),
        };
        // Empty lines before the request line are skipped by the parser (RFC 9112 §2.2): they
        // would otherwise look like the blank line that ends a head, and the head that follows
        // would be read with no deadline.
        let (read, tail) = if started {
            (read, tail)
        } else {
            (skip_empty_lines(read), [0; 2])
        };
        // The clock is read only for a head that did not come whole in its first read.
        let limit = self.limit;
        let deadline = || deadline.unwrap_or_else(|| Instant::now() + limit);
        if read.is_empty() {
            self.phase = Phase::Head {
                deadline: deadline(),
                tail,
                started: false,
            };
            return;
        }
        match head_end(tail, read) {
            Ok(_) => {
                self.phase = Phase::Body;
                // Not kept for the next head: an idle keep-alive connection holds no timer.
                self.timer = None;
            }
            Err(tail) => {
                self.phase = Phase::Head {
                    deadline: deadline(),
                    tail,
                    started: true,
                };
            }
        }
    }

    /// Polls the connection's one timer, set for `deadline`: ready once it has passed.
    fn poll_timer(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx)
    }

    /// The close: what is gathered is sent, then the end of the stream, then whatever the
    /// client still sends is read and dropped until it closes too, `LINGER_IDLE` passes with
    /// nothing, or `LINGER` in all (RFC 9112 §9.6). A client still sending (the rest of a body
    /// refused before it was read, requests pipelined behind a refusal) would otherwise have
    /// the connection reset under it, and lose the answer it had not read yet: a 413 would
    /// reach it as a broken pipe. Every outcome is `Ok`: the connection is done either way.
    ///
    /// A connection closed while a head is read (it timed out, or was refused unparsable) is
    /// not lingered on: the client still sending is a slow or broken head, owed no more time.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let in_head = matches!(self.phase, Phase::Head { .. });
        let mut linger = *self.closing.get_or_insert_with(|| {
            let now = Instant::now();
            Linger {
                until: now + LINGER,
                idle_until: now + LINGER_IDLE,
                fin_sent: false,
            }
        });
        let progress = loop {
            if !linger.fin_sent {
                match self.poll_send_gathered(cx) {
                    Poll::Ready(Ok(())) => {}
                    other => break other,
                }
                match Pin::new(&mut self.inner).poll_shutdown(cx) {
                    Poll::Ready(Ok(())) => linger.fin_sent = true,
                    other => break other,
                }
            }
            if in_head {
                break Poll::Ready(Ok(()));
            }
            let mut scratch = [MaybeUninit::<u8>::uninit(); LINGER_READ];
            let mut read = ReadBuf::uninit(&mut scratch);
            match Pin::new(&mut self.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if !read.filled().is_empty() => {
                    let now = Instant::now();
                    if now >= linger.until {
                        break Poll::Ready(Ok(()));
                    }
                    linger.idle_until = linger.until.min(now + LINGER_IDLE);
                }
                // The client closed, or the connection failed: done.
                Poll::Ready(_) => break Poll::Ready(Ok(())),
                Poll::Pending => break Poll::Pending,
            }
        };
        self.closing = Some(linger);
        match progress {
            // A failure to send means the client is gone: done too.
            Poll::Ready(_) => Poll::Ready(Ok(())),
            Poll::Pending => {
                ready!(self.poll_timer(cx, linger.idle_until));
                Poll::Ready(Ok(()))
            }
        }
    }

    /// Reads from the connection under the head deadline (when a head is being read).
    fn poll_read_timed(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let deadline = match self.phase {
            Phase::Head { deadline, .. } => Some(deadline),
            Phase::Body | Phase::Between => None,
        };
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Poll::Ready(Err(self.timed_out()));
        }
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending => {
                let Some(deadline) = deadline else {
                    return Poll::Pending;
                };
                // Be woken at the deadline even if the client sends nothing more.
                ready!(self.poll_timer(cx, deadline));
                Poll::Ready(Err(self.timed_out()))
            }
            ready => ready,
        }
    }
}

/// `read` without the empty lines (`\r\n` or `\n`) it starts with.
fn skip_empty_lines(read: &[u8]) -> &[u8] {
    let start = read
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(read.len());
    &read[start..]
}

/// Where the empty line that ends a head (`\n\n` or `\n\r\n`: httparse accepts both) ends in
/// `read`, given the two bytes read before it (`tail`): `Ok(index just past it)`, or
/// `Err(the last two bytes read so far)` when the head goes on. Only the line feeds are looked
/// at one by one (`memchr` finds them a word at a time); a head is mostly everything else.
fn head_end(tail: [u8; 2], read: &[u8]) -> Result<usize, [u8; 2]> {
    // The byte `back` places before `at`, from `read` or, before its start, from `tail`.
    let before = |at: usize, back: usize| -> u8 {
        if at >= back {
            read[at - back]
        } else {
            tail[2 + at - back]
        }
    };
    for at in memchr::memchr_iter(b'\n', read) {
        let prev = before(at, 1);
        if prev == b'\n' || (prev == b'\r' && before(at, 2) == b'\n') {
            return Ok(at + 1);
        }
    }
    Err(match read.len() {
        0 => tail,
        n => [before(n, 2), read[n - 1]],
    })
}

impl AsyncRead for HeadDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        if let Some((bytes, at)) = &mut this.ahead {
            let n = (bytes.len() - *at).min(buf.remaining());
            buf.put_slice(&bytes[*at..*at + n]);
            *at += n;
            if *at == bytes.len() {
                this.ahead = None;
            }
        } else {
            ready!(this.poll_read_timed(cx, buf))?;
        }
        this.observe(&buf.filled()[before..]);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for HeadDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(replaced) = self.poll_replace(cx, buf, buf.len()) {
            return replaced;
        }
        self.poll_gather(cx, &[io::IoSlice::new(buf)], buf.len())
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total = bufs.iter().map(|b| b.len()).sum();
        let first = bufs.iter().find(|b| !b.is_empty());
        if let Some(replaced) = self.poll_replace(cx, first.map_or(&[][..], |b| &b[..]), total) {
            return replaced;
        }
        self.poll_gather(cx, bufs, total)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send_gathered(cx))?;
        // Nothing kept between responses.
        self.out = Vec::new();
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// Closes lingering: see [`HeadDeadline::poll_close`].
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_close(cx)
    }
}

#[async_trait]
impl Shutdown for HeadDeadline {
    async fn shutdown(&mut self) {
        // What is gathered goes first (best effort: the connection is closing either way).
        let _ = std::future::poll_fn(|cx| self.poll_send_gathered(cx)).await;
        self.inner.shutdown().await
    }
}

impl UniqueID for HeadDeadline {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadDeadline {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }
    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadDeadline {
    fn get_timing_digest(&self) -> TimingDigests {
        self.inner.get_timing_digest()
    }
    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }
    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeadDeadline {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for HeadDeadline {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

/// [`HeadDeadline::wait_readable`], then the start of what came copied into `buf` without
/// consuming it. The end of the stream is an `UnexpectedEof` error.
#[async_trait]
impl Peek for HeadDeadline {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if !self.wait_readable().await? {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if let Some((bytes, at)) = &self.ahead {
            let n = (bytes.len() - at).min(buf.len());
            buf[..n].copy_from_slice(&bytes[*at..*at + n]);
        }
        Ok(true)
    }
}

/// A response head is serialized straight into the gathered write, except where it may be
/// Pingora's bare 400 (written while a head is read, or with status 400), which
/// [`AsyncWrite::poll_write`] looks at to replace.
impl GatherHead for HeadDeadline {
    fn gather_head(&mut self, status: u16) -> Option<&mut Vec<u8>> {
        if self.phase != Phase::Body || status == 400 || self.replacing.is_some() {
            return None;
        }
        if self.out.capacity() == 0 {
            self.out.reserve_exact(GATHER);
        }
        Some(&mut self.out)
    }
}

impl fmt::Debug for HeadDeadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeadDeadline")
            .field("phase", &self.phase)
            .field("inner", &self.inner)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair(limit_ms: u64) -> (Box<HeadDeadline>, tokio::io::DuplexStream, IntCounter) {
        let (server, client) = tokio::io::duplex(4096);
        let counter = IntCounter::new("t", "t").unwrap();
        let bad_head: BadHead =
            Arc::new(|_| b"HTTP/1.1 400 Bad Request\r\nX-Replaced: 1\r\n\r\n".to_vec());
        let wrapped = HeadDeadline::wrap(
            Box::new(server),
            Duration::from_millis(limit_ms),
            counter.clone(),
            Some(bad_head),
        );
        (wrapped, client, counter)
    }

    #[tokio::test]
    async fn a_head_dribbled_past_the_deadline_fails_the_read() {
        let (mut server, mut client, counter) = pair(150);
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        assert!(server.read(&mut buf).await.unwrap() > 0);
        // Nothing more comes: the next read fails at the deadline, not at the next byte.
        let err = server.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(counter.get(), 1);
    }

    #[tokio::test]
    async fn bodies_are_not_timed_and_the_next_head_gets_a_fresh_deadline() {
        let (mut server, mut client, counter) = pair(150);
        let mut buf = [0u8; 256];
        client
            .write_all(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nab")
            .await
            .unwrap();
        let _ = server.read(&mut buf).await.unwrap();
        // The rest of the body comes after the head's deadline: fine.
        tokio::time::sleep(Duration::from_millis(250)).await;
        client.write_all(b"cd").await.unwrap();
        assert_eq!(server.read(&mut buf).await.unwrap(), 2);
        server.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        server.flush().await.unwrap();
        server.next_request(None);
        // The client waits (idle), then sends its next head in time.
        tokio::time::sleep(Duration::from_millis(250)).await;
        client.write_all(b"GET /next HTTP/1.1\r\n").await.unwrap();
        let _ = server.read(&mut buf).await.unwrap();
        client.write_all(b"Host: a\r\n\r\n").await.unwrap();
        assert!(server.read(&mut buf).await.unwrap() > 0);
        assert_eq!(counter.get(), 0);
    }

    #[tokio::test]
    async fn an_answer_written_during_a_head_is_replaced_whole() {
        let (mut server, mut client, _) = pair(5000);
        client
            .write_all(b"GET / HTTP/1.1\r\nBad Header\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let _ = server.read(&mut buf).await.unwrap();
        // Pingora's bare answer, in two writes: both are taken as written, neither is sent.
        server
            .write_all(b"HTTP/1.1 400 Bad Request\r\n")
            .await
            .unwrap();
        server
            .write_all(b"Content-Length: 0\r\n\r\n")
            .await
            .unwrap();
        drop(server);
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"HTTP/1.1 400 Bad Request\r\nX-Replaced: 1\r\n\r\n");
    }

    /// A pipelined next head read with the last request is followed from where it stands:
    /// its blank line is found when it is split between those bytes and the next read, and
    /// the rest of the head is due within the limit.
    #[tokio::test]
    async fn a_head_read_ahead_is_followed_across_the_next_read() {
        let (mut server, mut client, counter) = pair(150);
        let mut buf = [0u8; 256];
        read_a_head(&mut server, &mut client).await;
        server.write_all(OK_RESPONSE).await.unwrap();
        server.flush().await.unwrap();
        // Read with the first request, up to the last line's end but not the blank line.
        assert!(server.next_request(Some(b"GET /two HTTP/1.1\r\nHost: a\r\n")));
        assert!(
            matches!(server.phase, Phase::Head { .. }),
            "{:?}",
            server.phase
        );
        client.write_all(b"\r\n").await.unwrap();
        assert_eq!(server.read(&mut buf).await.unwrap(), 2);
        assert_eq!(server.phase, Phase::Body, "the blank line ended the head");
        // A response now is the request's, not a refusal to replace.
        server.write_all(OK_RESPONSE).await.unwrap();
        server.flush().await.unwrap();
        let mut out = vec![0u8; OK_RESPONSE.len() * 2];
        client.read_exact(&mut out).await.unwrap();
        assert_eq!(out, [OK_RESPONSE, OK_RESPONSE].concat());

        // A head read ahead whole leaves nothing timed; one cut short is due as any head.
        assert!(server.next_request(Some(b"\r\nGET /three HTTP/1.1\r\nHost: a\r\n\r\n")));
        assert_eq!(server.phase, Phase::Body);
        assert!(server.next_request(Some(b"GET /four HTTP/1.1\r\nHo")));
        let err = server.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(counter.get(), 1);
    }

    /// Empty lines before a request line (which the parser skips) neither end the head nor
    /// stop its clock: a client cannot send them and then take its time over the head.
    #[tokio::test]
    async fn empty_lines_before_a_head_are_under_its_deadline() {
        let (mut server, mut client, counter) = pair(150);
        let mut buf = [0u8; 64];
        client.write_all(b"\r\n\r\n\n").await.unwrap();
        assert_eq!(server.read(&mut buf).await.unwrap(), 5);
        assert!(
            matches!(server.phase, Phase::Head { started: false, .. }),
            "{:?}",
            server.phase
        );
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert!(server.read(&mut buf).await.unwrap() > 0);
        let read = tokio::time::timeout(Duration::from_secs(2), server.read(&mut buf)).await;
        let err = read.expect("cut at the deadline").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(counter.get(), 1);

        // A stray line end read after a request is no request: the wait stays the idle one.
        let (mut server, mut client, _) = pair(150);
        read_a_head(&mut server, &mut client).await;
        assert!(!server.next_request(Some(b"\r\n")));
        assert_eq!(server.phase, Phase::Between);
    }

    /// A close sends what is gathered and the end of the stream at once, then reads and drops
    /// what the client still sends (the rest of a refused upload) until the client closes.
    #[tokio::test]
    async fn a_close_lingers_while_the_client_still_sends() {
        let (mut server, mut client, _) = pair(5000);
        read_a_head(&mut server, &mut client).await;
        server.write_all(OK_RESPONSE).await.unwrap();
        let closing = tokio::spawn(async move { server.shutdown().await });
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, OK_RESPONSE, "the answer, then the end of the stream");
        for _ in 0..64 {
            client.write_all(&[b'x'; 1024]).await.expect("still read");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!closing.is_finished(), "lingers until the client closes");
        drop(client);
        let closed = tokio::time::timeout(Duration::from_secs(2), closing).await;
        assert!(matches!(closed, Ok(Ok(Ok(())))), "{closed:?}");
    }

    /// A client that neither sends nor closes is waited for `LINGER_IDLE`, no longer.
    #[tokio::test]
    async fn a_close_waits_for_a_silent_client_no_longer_than_linger_idle() {
        let (mut server, mut client, _) = pair(5000);
        read_a_head(&mut server, &mut client).await;
        let started = Instant::now();
        let closed = tokio::time::timeout(LINGER_IDLE * 2, server.shutdown()).await;
        assert!(matches!(closed, Ok(Ok(()))), "{closed:?}");
        assert!(started.elapsed() >= LINGER_IDLE, "{:?}", started.elapsed());
    }

    /// A close while a head is read (its deadline passed, or it was refused) does not linger.
    #[tokio::test]
    async fn a_close_during_a_head_does_not_linger() {
        let (mut server, mut client, _) = pair(5000);
        client.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
        let mut buf = [0u8; 64];
        assert!(server.read(&mut buf).await.unwrap() > 0);
        let closed = tokio::time::timeout(Duration::from_secs(1), server.shutdown()).await;
        assert!(matches!(closed, Ok(Ok(()))), "{closed:?}");
        drop(client);
    }

    /// A response whose body is its last two bytes, `ok`.
    const OK_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

    /// The client sends a request head and the server reads it.
    async fn read_a_head(server: &mut HeadDeadline, client: &mut tokio::io::DuplexStream) {
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let _ = server.read(&mut buf).await.unwrap();
    }

    /// What the server wrote waits for its flush, then reaches the client in one write.
    async fn sent_at_the_flush(
        server: &mut HeadDeadline,
        client: &mut tokio::io::DuplexStream,
        expected: &[u8],
    ) {
        let mut buf = [0u8; 256];
        let early = tokio::time::timeout(Duration::from_millis(50), client.read(&mut buf)).await;
        assert!(early.is_err(), "nothing is written before the flush");
        server.flush().await.unwrap();
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], expected);
    }

    #[tokio::test]
    async fn a_response_is_gathered_until_flushed_and_nothing_is_kept_after() {
        let (mut server, mut client, _) = pair(5000);
        read_a_head(&mut server, &mut client).await;
        server
            .write_all(&OK_RESPONSE[..OK_RESPONSE.len() - 2])
            .await
            .unwrap();
        server.write_all(b"ok").await.unwrap();
        sent_at_the_flush(&mut server, &mut client, OK_RESPONSE).await;
        // A write larger than the gather buffer goes out in order after what is gathered.
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            client.read_to_end(&mut out).await.unwrap();
            out
        });
        server.write_all(b"small,").await.unwrap();
        let large = vec![b'x'; GATHER * 3];
        server.write_all(&large).await.unwrap();
        server.write_all(b",tail").await.unwrap();
        server.flush().await.unwrap();
        drop(server);
        let out = reader.await.unwrap();
        let mut expected = b"small,".to_vec();
        expected.extend_from_slice(&large);
        expected.extend_from_slice(b",tail");
        assert_eq!(out, expected);
    }

    #[tokio::test]
    async fn a_head_serialized_into_the_gathered_write_leaves_with_its_body() {
        let (mut server, mut client, _) = pair(5000);
        // While a head is read, anything written may be Pingora's refusal: no buffer lent.
        assert!(server.gather_head(200).is_none());
        read_a_head(&mut server, &mut client).await;
        // A 400 may be Pingora's bare answer, which is looked at as it is written.
        assert!(server.gather_head(400).is_none());
        let head = server
            .gather_head(200)
            .expect("a head is read: the buffer is lent");
        head.extend_from_slice(&OK_RESPONSE[..OK_RESPONSE.len() - 2]);
        server.write_all(b"ok").await.unwrap();
        sent_at_the_flush(&mut server, &mut client, OK_RESPONSE).await;
        assert_eq!(server.out.capacity(), 0, "nothing is kept after the flush");
        // A head larger than the gather buffer is taken whole, and goes first.
        let large = format!(
            "HTTP/1.1 200 OK\r\nX-Big: {}\r\n\r\n",
            "y".repeat(GATHER * 2)
        );
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            client.read_to_end(&mut out).await.unwrap();
            out
        });
        server
            .gather_head(200)
            .expect("still lent")
            .extend_from_slice(large.as_bytes());
        server.write_all(b"body").await.unwrap();
        server.flush().await.unwrap();
        drop(server);
        assert_eq!(reader.await.unwrap(), format!("{large}body").into_bytes());
    }

    #[tokio::test]
    async fn peeked_bytes_are_read_again_and_the_buffers_go_when_done() {
        let (server, mut client) = tokio::io::duplex(4096);
        let counter = IntCounter::new("t", "t").unwrap();
        let mut hd = HeadDeadline::wrap(Box::new(server), Duration::from_secs(60), counter, None);
        // Waiting for a later request.
        hd.phase = Phase::Between;
        client
            .write_all(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 3];
        assert!(hd.try_peek(&mut first).await.unwrap());
        assert_eq!(&first, b"GET");
        // Peeking again does not consume either.
        assert!(hd.try_peek(&mut first).await.unwrap());
        let mut head = vec![0u8; 64];
        let n = hd.read(&mut head).await.unwrap();
        assert_eq!(
            &head[..n],
            b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n".as_slice()
        );
        assert!(hd.ahead.is_none(), "the read-ahead is freed once read");
        assert_eq!(hd.phase, Phase::Body, "peeked bytes were seen as a head");
        hd.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .unwrap();
        hd.flush().await.unwrap();
        assert_eq!(
            hd.out.capacity(),
            0,
            "no write buffer kept between responses"
        );
        drop(client);
        let err = hd.try_peek(&mut first).await.unwrap_err();
        assert_eq!(
            err.kind(),
            io::ErrorKind::UnexpectedEof,
            "closed: no request to come"
        );
    }

    /// After `101 Switching Protocols` the connection carries frames both ways: none of them
    /// is taken for a head, whatever their timing, and nothing is ever replaced.
    #[tokio::test]
    async fn an_upgraded_connection_is_never_under_the_head_deadline() {
        let (mut server, mut client, counter) = pair(150);
        client
            .write_all(
                b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            )
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let _ = server.read(&mut buf).await.unwrap();
        server
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
            .await
            .unwrap();
        server.flush().await.unwrap();
        let n = client.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 101"));
        for round in 0..3 {
            // A server frame, then a client frame well after the head deadline.
            server.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
            server.flush().await.unwrap();
            let n = client.read(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], &[0x81, 0x02, b'h', b'i'], "round {round}");
            tokio::time::sleep(Duration::from_millis(200)).await;
            client
                .write_all(&[0x81, 0x82, 1, 2, 3, 4, b'y' ^ 1, b'o' ^ 2])
                .await
                .unwrap();
            let n = server.read(&mut buf).await.unwrap();
            assert_eq!(n, 8, "round {round}: the frame is read, not timed out");
        }
        assert_eq!(counter.get(), 0);
    }

    /// A response that starts while the request body is still coming (an upload answered as
    /// it streams) leaves the rest of the body untimed.
    #[tokio::test]
    async fn a_body_read_after_its_response_started_is_not_a_head() {
        let (mut server, mut client, counter) = pair(150);
        client
            .write_all(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nab")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let _ = server.read(&mut buf).await.unwrap();
        server
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .await
            .unwrap();
        server.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        client.write_all(b"cdef").await.unwrap();
        assert_eq!(server.read(&mut buf).await.unwrap(), 4);
        server.write_all(b"2\r\nok\r\n0\r\n\r\n").await.unwrap();
        server.flush().await.unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"0\r\n\r\n") {
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert!(
            !String::from_utf8_lossy(&got).contains("400"),
            "nothing replaced: {:?}",
            String::from_utf8_lossy(&got)
        );
        assert_eq!(counter.get(), 0);
    }

    #[tokio::test]
    async fn a_100_continue_does_not_start_the_next_head() {
        let (mut server, mut client, counter) = pair(150);
        let mut buf = [0u8; 256];
        client
            .write_all(b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
            .await
            .unwrap();
        let _ = server.read(&mut buf).await.unwrap();
        server
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        client.write_all(b"x").await.unwrap();
        assert_eq!(server.read(&mut buf).await.unwrap(), 1);
        assert_eq!(counter.get(), 0);
    }

    /// The definition `head_end` implements: byte by byte.
    fn head_end_bytewise(mut tail: [u8; 2], read: &[u8]) -> Result<usize, [u8; 2]> {
        for (i, &b) in read.iter().enumerate() {
            if b == b'\n' && (tail[1] == b'\n' || (tail[1] == b'\r' && tail[0] == b'\n')) {
                return Ok(i + 1);
            }
            tail = [tail[1], b];
        }
        Err(tail)
    }

    proptest::proptest! {
        /// `head_end` agrees with the byte-by-byte definition on any bytes after any two:
        /// mostly `\r`, `\n` and a letter, so every way a blank line can start, end or be cut
        /// off by the start of a read comes up.
        #[test]
        fn head_end_is_the_bytewise_scan(
            tail in proptest::array::uniform2(proptest::sample::select(vec![b'\r', b'\n', b'a', 0u8])),
            read in proptest::collection::vec(proptest::sample::select(vec![b'\r', b'\n', b'a', b':', 0xff]), 0..40),
        ) {
            proptest::prop_assert_eq!(head_end(tail, &read), head_end_bytewise(tail, &read));
        }

        /// However a head is cut into reads, it ends exactly at its blank line, with CRLF or
        /// bare LF line ends, and after any empty lines before it.
        #[test]
        fn the_end_of_a_head_is_found_across_any_split(
            fields in proptest::collection::vec("[A-Za-z-]{1,10}: [a-z0-9 ]{0,10}", 0..6),
            cuts in proptest::collection::vec(0usize..200, 0..8),
            lf_only: bool,
            empty_lines in 0usize..4,
        ) {
            let eol = if lf_only { "\n" } else { "\r\n" };
            let mut head = format!("{}GET / HTTP/1.1{eol}", eol.repeat(empty_lines));
            for f in &fields {
                head.push_str(f);
                head.push_str(eol);
            }
            head.push_str(eol);
            let bytes = head.as_bytes();
            let (server, _client) = tokio::io::duplex(64);
            let counter = IntCounter::new("t", "t").unwrap();
            let mut hd = HeadDeadline::wrap(Box::new(server), Duration::from_secs(60), counter, None);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % bytes.len()).collect();
            cuts.push(bytes.len());
            cuts.sort_unstable();
            let mut from = 0;
            for cut in cuts {
                proptest::prop_assert!(matches!(hd.phase, Phase::Head { .. }), "ended early at {from}");
                hd.observe(&bytes[from..cut]);
                from = cut;
            }
            proptest::prop_assert_eq!(hd.phase, Phase::Body);
        }
    }
}
