//! The network half of `palisade verify` below HTTP clients: TLS handshakes with rustls (the
//! negotiated version and the certificate chain, whether or not it verifies), a hand-written
//! TLS 1.1 ClientHello (rustls cannot speak anything older than 1.2), and an oversized POST
//! written by hand so the probe sees the answer the moment it comes and never sends more than
//! it declared.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ProtocolVersion, RootCertStore};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::checks::BodyAnswer;

/// Where the probes connect: the URL's host and port.
#[derive(Debug, Clone)]
pub struct Target {
    /// The host as written in the URL (no brackets around IPv6).
    pub host: String,
    pub port: u16,
    /// `host[:port]` for the `Host` header.
    pub authority: String,
    pub server_name: ServerName<'static>,
}

impl Target {
    pub fn new(url: &reqwest::Url) -> Result<Target, String> {
        let port = url
            .port_or_known_default()
            .ok_or_else(|| format!("`{url}` has no port"))?;
        let written = url
            .host_str()
            .ok_or_else(|| format!("`{url}` has no host"))?;
        let bare = written.trim_start_matches('[').trim_end_matches(']');
        let server_name = match bare.parse::<IpAddr>() {
            Ok(ip) => ServerName::from(ip),
            Err(_) => ServerName::try_from(bare.to_string())
                .map_err(|e| format!("`{bare}` is not a host name: {e}"))?,
        };
        let host = bare.to_string();
        let bracketed = written.to_string();
        let authority = match url.port() {
            Some(p) => format!("{bracketed}:{p}"),
            None => bracketed,
        };
        Ok(Target {
            host,
            port,
            authority,
            server_name,
        })
    }

    /// Connects to the first address of the host that accepts.
    async fn connect(&self) -> Result<TcpStream, String> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", self.host))?
            .collect();
        let mut last = format!("{} resolves to no address", self.host);
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) => last = format!("cannot connect to {addr}: {e}"),
            }
        }
        Err(last)
    }
}

/// The roots a certificate is checked against: Mozilla's (webpki-roots), plus `--ca`.
pub fn roots(extra: &[CertificateDer<'static>]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in extra {
        roots
            .add(cert.clone())
            .map_err(|e| format!("not a usable CA certificate: {e}"))?;
    }
    Ok(roots)
}

/// Reads a PEM file of certificates (`--ca`).
pub fn read_pem_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut text.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("`{}` is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("`{}` holds no certificate", path.display()));
    }
    Ok(certs)
}

/// Checks the chain like a browser would, remembers the verdict, and lets the handshake go on
/// either way, so one connection tells both whether the certificate is trusted and what it is.
#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    verdict: Mutex<Option<Result<(), String>>>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map(|_| ())
            .map_err(|e| e.to_string());
        *self.verdict.lock().unwrap_or_else(|e| e.into_inner()) = Some(verdict);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What one handshake showed.
#[derive(Debug)]
pub struct Handshake {
    pub version: Option<ProtocolVersion>,
    pub alpn: Option<String>,
    /// The chain the server sent, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// Whether the chain verifies for the host against the roots (the error otherwise).
    pub trust: Result<(), String>,
}

/// Which protocol versions a handshake offers.
#[derive(Debug, Clone, Copy)]
pub enum Offer {
    /// TLS 1.3 and 1.2, like a current browser.
    Modern,
    /// TLS 1.2 only.
    Tls12,
}

/// A TLS connection to `target`, offering `offer` and `alpn`. The certificate's verdict is in
/// the returned [`Handshake`]; the connection is made whatever it is.
pub async fn handshake(
    target: &Target,
    roots: &Arc<RootCertStore>,
    offer: Offer,
    alpn: &[&[u8]],
) -> Result<(Handshake, TlsStream<TcpStream>), String> {
    let inner = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|e| format!("cannot build a certificate verifier: {e}"))?;
    let verifier = Arc::new(RecordingVerifier {
        inner,
        verdict: Mutex::new(None),
    });
    let versions: &[&'static rustls::SupportedProtocolVersion] = match offer {
        Offer::Modern => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Offer::Tls12 => &[&rustls::version::TLS12],
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| format!("cannot build a TLS client: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = target.connect().await?;
    let stream = TlsConnector::from(Arc::new(config))
        .connect(target.server_name.clone(), tcp)
        .await
        .map_err(|e| format!("TLS handshake failed: {e}"))?;
    let (_, conn) = stream.get_ref();
    let handshake = Handshake {
        version: conn.protocol_version(),
        alpn: conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        chain: conn
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default(),
        trust: verifier
            .verdict
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_else(|| Err("the server sent no certificate".into())),
    };
    Ok((handshake, stream))
}

/// What a server said to a ClientHello offering at most TLS 1.1.
#[derive(Debug, PartialEq, Eq)]
pub enum Legacy {
    /// It answered with a ServerHello for this version (0x0301 is TLS 1.0, 0x0302 TLS 1.1).
    Accepted(u16),
    /// It refused: an alert, a close, or a ServerHello it had no right to send.
    Refused(String),
}

/// Offers TLS 1.0 and 1.1 only, with the cipher suites of that era, and reads the first record
/// of the answer.
pub async fn legacy_hello(target: &Target) -> Result<Legacy, String> {
    let mut tcp = target.connect().await?;
    let sni = match target.server_name {
        ServerName::DnsName(ref d) => Some(d.as_ref().to_string()),
        _ => None,
    };
    tcp.write_all(&client_hello_tls11(sni.as_deref()))
        .await
        .map_err(|e| format!("cannot send a ClientHello: {e}"))?;
    let mut head = [0u8; 5];
    if let Err(e) = tcp.read_exact(&mut head).await {
        return Ok(Legacy::Refused(format!("the connection closed ({e})")));
    }
    match head[0] {
        0x15 => {
            let mut alert = [0u8; 2];
            let description = match tcp.read_exact(&mut alert).await {
                Ok(_) => alert_name(alert[1]),
                Err(_) => "an alert",
            };
            Ok(Legacy::Refused(format!("refused with {description}")))
        }
        0x16 => {
            // A handshake record: ServerHello (type 2), a 3-byte length, then its version.
            let mut hello = [0u8; 6];
            if tcp.read_exact(&mut hello).await.is_err() || hello[0] != 2 {
                return Ok(Legacy::Refused("no ServerHello".into()));
            }
            let version = u16::from_be_bytes([hello[4], hello[5]]);
            if version <= 0x0302 {
                Ok(Legacy::Accepted(version))
            } else {
                Ok(Legacy::Refused(format!(
                    "answered version {version:#06x}, which it was not offered"
                )))
            }
        }
        other => Ok(Legacy::Refused(format!(
            "answered a record of type {other}, not TLS"
        ))),
    }
}

fn alert_name(code: u8) -> &'static str {
    match code {
        40 => "a handshake_failure alert",
        70 => "a protocol_version alert",
        71 => "an insufficient_security alert",
        _ => "an alert",
    }
}

/// A TLS 1.1 ClientHello (RFC 4346): the suites of that era, SNI, and the elliptic-curve
/// extensions servers of that era expect.
fn client_hello_tls11(sni: Option<&str>) -> Vec<u8> {
    const SUITES: &[u16] = &[
        0xc014, 0xc013, 0xc00a, 0xc009, // ECDHE with AES-CBC-SHA
        0x0039, 0x0033, // DHE with AES-CBC-SHA
        0x0035, 0x002f, 0x000a, // RSA key exchange
        0x00ff, // renegotiation info
    ];
    let mut extensions = Vec::new();
    if let Some(name) = sni.filter(|n| n.len() < 256) {
        let name = name.as_bytes();
        extensions.extend_from_slice(&0u16.to_be_bytes()); // server_name
        extensions.extend_from_slice(&u16_len(name.len() + 5));
        extensions.extend_from_slice(&u16_len(name.len() + 3));
        extensions.push(0); // host_name
        extensions.extend_from_slice(&u16_len(name.len()));
        extensions.extend_from_slice(name);
    }
    // supported_groups: secp256r1, secp384r1, x25519.
    extensions.extend_from_slice(&[0x00, 0x0a, 0x00, 0x08, 0x00, 0x06, 0x00, 0x17, 0x00, 0x18]);
    extensions.extend_from_slice(&[0x00, 0x1d]);
    // ec_point_formats: uncompressed.
    extensions.extend_from_slice(&[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);

    let mut body = vec![0x03, 0x02]; // client_version: TLS 1.1
    let random: [u8; 32] = std::array::from_fn(|_| fastrand::u8(..));
    body.extend_from_slice(&random);
    body.push(0); // no session id
    body.extend_from_slice(&u16_len(SUITES.len() * 2));
    for suite in SUITES {
        body.extend_from_slice(&suite.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null only
    body.extend_from_slice(&u16_len(extensions.len()));
    body.extend_from_slice(&extensions);

    let mut handshake = vec![1]; // ClientHello
    handshake.extend_from_slice(&u32::try_from(body.len()).unwrap_or(0).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&u16_len(handshake.len()));
    record.extend_from_slice(&handshake);
    record
}

fn u16_len(n: usize) -> [u8; 2] {
    u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes()
}

/// POSTs `size` bytes to `path` over HTTP/1.1, announced in `Content-Length`. The head goes
/// first and the probe waits up to `early` for an answer (a server that checks the length
/// answers now); then the body is streamed in 64 KiB pieces while the answer is watched for,
/// and writing stops the moment it comes. Never sends more than `size` bytes.
pub async fn post_oversized(
    target: &Target,
    roots: &Arc<RootCertStore>,
    path: &str,
    size: u64,
    early: Duration,
) -> Result<BodyAnswer, String> {
    let (_, stream) = handshake(target, roots, Offer::Modern, &[b"http/1.1"]).await?;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: palisade-verify/{}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n\
         Connection: close\r\n\r\n",
        target.authority,
        crate::version::VERSION
    );
    wr.write_all(head.as_bytes())
        .await
        .map_err(|e| format!("cannot send the request: {e}"))?;
    wr.flush()
        .await
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let answer = read_status(&mut rd);
    tokio::pin!(answer);
    if let Ok(status) = tokio::time::timeout(early, &mut answer).await {
        return Ok(BodyAnswer {
            status,
            sent: 0,
            size,
        });
    }
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0u64;
    while sent < size {
        let n = usize::try_from((size - sent).min(chunk.len() as u64)).unwrap_or(chunk.len());
        tokio::select! {
            biased;
            status = &mut answer => return Ok(BodyAnswer { status, sent, size }),
            written = wr.write_all(&chunk[..n]) => match written {
                Ok(()) => sent += n as u64,
                // The server closed its side: its answer, if any, is already on the way.
                Err(_) => break,
            },
        }
    }
    let _ = wr.flush().await;
    let status = answer.await;
    Ok(BodyAnswer { status, sent, size })
}

/// Reads a response head and returns its status; skips `100 Continue` and other interim
/// answers. `None` when the connection ends first or the head is not HTTP.
async fn read_status<R: AsyncRead + Unpin>(rd: &mut R) -> Option<u16> {
    const MAX_HEAD: usize = 64 * 1024;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut piece = [0u8; 4096];
    loop {
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            let status = parse_status(&buf[..end])?;
            if (100..200).contains(&status) {
                buf.drain(..end + 4);
                continue;
            }
            return Some(status);
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        match rd.read(&mut piece).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&piece[..n]),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `HTTP/1.1 413 Payload Too Large` -> 413.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_ascii_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let status = parts.next()?;
    (status.len() == 3)
        .then(|| status.parse::<u16>().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 413 Payload Too Large"), Some(413));
        assert_eq!(parse_status(b"HTTP/1.0 200 OK\r\nServer: x"), Some(200));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status(b"HTTP/1.1 20 OK"), None);
    }

    #[tokio::test]
    async fn interim_answers_are_skipped() {
        let mut input: &[u8] =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 413 Payload Too Large\r\nA: b\r\n\r\n";
        assert_eq!(read_status(&mut input).await, Some(413));
        let mut cut: &[u8] = b"HTTP/1.1 413 Payl";
        assert_eq!(read_status(&mut cut).await, None);
    }

    #[test]
    fn the_tls11_hello_is_well_formed() {
        let hello = client_hello_tls11(Some("example.com"));
        assert_eq!(&hello[..3], &[0x16, 0x03, 0x01]);
        let record_len = usize::from(u16::from_be_bytes([hello[3], hello[4]]));
        assert_eq!(record_len, hello.len() - 5);
        assert_eq!(hello[5], 1, "ClientHello");
        let body_len =
            (usize::from(hello[6]) << 16) | (usize::from(hello[7]) << 8) | usize::from(hello[8]);
        assert_eq!(body_len, hello.len() - 9);
        assert_eq!(&hello[9..11], &[0x03, 0x02], "offers TLS 1.1 at most");
        assert!(find(&hello, b"example.com").is_some());
    }
}
