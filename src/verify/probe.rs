//! The probes of `palisade verify`, in report order, each within the time that is left.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, Method};
use reqwest::Url;
use rustls::pki_types::CertificateDer;
use rustls::{ProtocolVersion, RootCertStore};

use super::checks::{self, clip, header, FOREIGN_ORIGIN};
use super::transport::{self, Handshake, Legacy, Offer, Target};
use super::{Finding, Options};

/// The fix of a probe that got no answer at all.
const NO_ANSWER: &str = "make sure the URL answers from outside, within --timeout";
/// The fix of a certificate a browser would refuse.
const CERT_FIX: &str = "serve a certificate for this name from a public CA, with its chain \
                        (or pass --ca FILE for a private CA)";
/// Requests of the burst in flight at once.
const BURST_PARALLEL: usize = 8;
/// How much of a body is read to look for leaks.
const BODY_CAP: usize = 64 * 1024;

/// What one HTTP answer showed: its status, headers, and the start of its body.
struct Seen {
    status: u16,
    headers: HeaderMap,
    body: String,
}

pub(super) struct Probe<'a> {
    options: &'a Options,
    target: Target,
    roots: Arc<RootCertStore>,
    ca: &'a [CertificateDer<'static>],
    deadline: Instant,
    pub(super) requests: usize,
    pub(super) handshakes: usize,
}

impl<'a> Probe<'a> {
    pub(super) fn new(
        options: &'a Options,
        roots: Arc<RootCertStore>,
        ca: &'a [CertificateDer<'static>],
    ) -> Result<Probe<'a>, String> {
        Ok(Probe {
            target: Target::new(&options.url)?,
            options,
            roots,
            ca,
            deadline: Instant::now() + options.deadline,
            requests: 0,
            handshakes: 0,
        })
    }

    /// The time the next probe may take: `--timeout`, or what is left of `--deadline`.
    fn budget(&self) -> Option<Duration> {
        self.deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .map(|left| left.min(self.options.timeout))
    }

    fn out_of_time(&self, check: &'static str) -> Finding {
        Finding::fail(
            check,
            format!(
                "not checked: the {}s deadline was reached",
                self.options.deadline.as_secs()
            ),
            "raise --deadline",
        )
    }

    /// Runs `future` within the budget: `Err` says why it did not finish.
    async fn bounded<T>(
        &self,
        future: impl std::future::Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        let Some(limit) = self.budget() else {
            return Err("the deadline was reached".into());
        };
        match tokio::time::timeout(limit, future).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "no answer within {}",
                humantime::format_duration(limit)
            )),
        }
    }

    pub(super) async fn all(&mut self) -> Vec<Finding> {
        let mut out = Vec::new();
        self.handshakes += 1;
        let modern = self
            .bounded(transport::handshake(
                &self.target,
                &self.roots,
                Offer::Modern,
                &[b"h2", b"http/1.1"],
            ))
            .await;
        let hs = match modern {
            Ok((hs, _stream)) => hs,
            Err(e) => {
                out.push(Finding::fail(
                    "connect",
                    format!("https://{}: {e}", self.target.authority),
                    "check the URL, the port and the firewall",
                ));
                return out;
            }
        };
        out.push(self.tls_version(&hs).await);
        out.push(self.tls_legacy().await);
        out.extend(self.certificate(&hs));

        let untrusted = hs.trust.is_err();
        let client = match self.client(untrusted) {
            Ok(client) => client,
            Err(e) => {
                out.push(Finding::fail("connect", e, "check the --ca file"));
                return out;
            }
        };
        out.push(self.redirect(&client).await);

        let main = self
            .fetch(&client, Method::GET, self.options.url.clone(), &[])
            .await;
        match &main {
            Ok(seen) => out.extend([
                checks::hsts(&seen.headers),
                checks::csp(&seen.headers),
                checks::nosniff(&seen.headers),
                checks::frame(&seen.headers),
                checks::referrer(&seen.headers),
            ]),
            Err(e) => {
                for check in ["hsts", "csp", "nosniff", "frame", "referrer"] {
                    out.push(Finding::fail(
                        check,
                        format!("no answer to GET {}: {e}", self.options.url),
                        NO_ANSWER,
                    ));
                }
            }
        }

        let random = format!("/palisade-verify-{:016x}", fastrand::u64(..));
        let not_found = self
            .fetch(&client, Method::GET, self.same_origin(&random), &[])
            .await;
        let healthz = self
            .fetch(&client, Method::GET, self.same_origin("/healthz"), &[])
            .await;
        let mut answers: Vec<(&str, &HeaderMap)> = Vec::new();
        for (label, seen) in [("page", &main), ("404", &not_found), ("/healthz", &healthz)] {
            if let Ok(seen) = seen {
                answers.push((label, &seen.headers));
            }
        }
        out.push(checks::fingerprints(&answers));
        out.push(match &healthz {
            Ok(seen) => checks::healthz(seen.status, &seen.body),
            Err(e) => Finding::fail("healthz", format!("GET /healthz: {e}"), NO_ANSWER),
        });
        out.push(match &not_found {
            Ok(seen) => checks::not_found(
                &random,
                seen.status,
                header(&seen.headers, "content-type"),
                &seen.body,
            ),
            Err(e) => Finding::fail("not_found", format!("GET {random}: {e}"), NO_ANSWER),
        });

        out.push(self.body_limit().await);
        out.push(self.cors(&client).await);
        out.push(match self.options.allow_load {
            Some(n) => self.burst(&client, n).await,
            None => Finding::skip(
                "rate_limit",
                "no burst sent (--allow-load N sends up to N requests to meet a 429)",
            ),
        });
        out
    }

    async fn tls_version(&mut self, hs: &Handshake) -> Finding {
        let alpn = hs.alpn.as_deref().unwrap_or("none");
        match hs.version {
            Some(ProtocolVersion::TLSv1_3) => {
                self.handshakes += 1;
                let also = match self
                    .bounded(transport::handshake(
                        &self.target,
                        &self.roots,
                        Offer::Tls12,
                        &[b"http/1.1"],
                    ))
                    .await
                {
                    Ok(_) => "TLS 1.2 also accepted",
                    Err(_) => "TLS 1.2 refused",
                };
                Finding::pass(
                    "tls_version",
                    format!("TLS 1.3 negotiated (ALPN {alpn}); {also}"),
                )
            }
            Some(ProtocolVersion::TLSv1_2) => Finding::warn(
                "tls_version",
                format!("TLS 1.2 negotiated (ALPN {alpn}): TLS 1.3 is not offered"),
                "enable TLS 1.3 (Palisade offers it unless the certificate cannot)",
            ),
            other => Finding::fail(
                "tls_version",
                format!("negotiated {other:?}"),
                "accept TLS 1.2 and 1.3 only",
            ),
        }
    }

    async fn tls_legacy(&mut self) -> Finding {
        self.handshakes += 1;
        match self.bounded(transport::legacy_hello(&self.target)).await {
            Ok(Legacy::Accepted(version)) => Finding::fail(
                "tls_legacy",
                format!(
                    "a TLS 1.1 ClientHello got a ServerHello for TLS 1.{}",
                    version.saturating_sub(0x0301)
                ),
                "refuse TLS below 1.2 (Palisade never accepts it)",
            ),
            Ok(Legacy::Refused(how)) => {
                Finding::pass("tls_legacy", format!("TLS 1.0 and 1.1 {how}"))
            }
            Err(e) => Finding::warn(
                "tls_legacy",
                format!("could not offer TLS 1.1: {e}"),
                "run verify again",
            ),
        }
    }

    /// `certificate` (trusted for the host) and `cert_expiry` (days left).
    fn certificate(&self, hs: &Handshake) -> Vec<Finding> {
        let host = &self.target.host;
        let Some(leaf) = hs.chain.first() else {
            return vec![
                Finding::fail("certificate", "the server sent no certificate", CERT_FIX),
                Finding::fail("cert_expiry", "the server sent no certificate", CERT_FIX),
            ];
        };
        let parsed = match x509_parser::parse_x509_certificate(leaf) {
            Ok((_, parsed)) => parsed,
            Err(e) => {
                let reason = format!("the certificate cannot be read: {e}");
                return vec![
                    Finding::fail("certificate", reason.clone(), CERT_FIX),
                    Finding::fail("cert_expiry", reason, CERT_FIX),
                ];
            }
        };
        let issuer = parsed.issuer().to_string();
        let trust = match &hs.trust {
            Ok(()) => Finding::pass(
                "certificate",
                format!("trusted for {host}, issued by {}", clip(&issuer, 60)),
            ),
            Err(e) if self.options.insecure => Finding::warn(
                "certificate",
                format!("not verified (--insecure): {e}"),
                "verify it without --insecure before going live",
            ),
            Err(e) => Finding::fail(
                "certificate",
                format!(
                    "not trusted for {host}: {e} (issued by {})",
                    clip(&issuer, 60)
                ),
                CERT_FIX,
            ),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let validity = parsed.validity();
        let expiry = checks::cert_expiry(
            now,
            validity.not_before.timestamp(),
            validity.not_after.timestamp(),
        );
        vec![trust, expiry]
    }

    /// An HTTP client for the requests: the same roots as the handshake. When the certificate
    /// did not verify, that is already a finding, and the other checks still run.
    fn client(&self, accept_invalid: bool) -> Result<reqwest::Client, String> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.options.timeout)
            .user_agent(format!("palisade-verify/{}", crate::version::VERSION))
            .danger_accept_invalid_certs(accept_invalid || self.options.insecure);
        for cert in self.ca {
            let cert = reqwest::Certificate::from_der(cert)
                .map_err(|e| format!("--ca: not a usable certificate: {e}"))?;
            builder = builder.add_root_certificate(cert);
        }
        builder
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))
    }

    fn same_origin(&self, path: &str) -> Url {
        let mut url = self.options.url.clone();
        url.set_path(path);
        url.set_query(None);
        url
    }

    async fn fetch(
        &mut self,
        client: &reqwest::Client,
        method: Method,
        url: Url,
        headers: &[(&str, &'static str)],
    ) -> Result<Seen, String> {
        self.requests += 1;
        let mut request = client.request(method, url);
        for (name, value) in headers {
            request = request.header(*name, HeaderValue::from_static(value));
        }
        self.bounded(async {
            let response = request.send().await.map_err(describe)?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = read_capped(response).await;
            Ok(Seen {
                status,
                headers,
                body,
            })
        })
        .await
    }

    async fn redirect(&mut self, client: &reqwest::Client) -> Finding {
        let url = self.options.http_url.clone();
        let seen = match self.fetch(client, Method::GET, url.clone(), &[]).await {
            Ok(seen) => seen,
            Err(e) => {
                return Finding::warn(
                    "redirect_https",
                    format!("nothing answered {url}: {e}"),
                    "answer plain HTTP with a redirect (Palisade: listen + redirect_https), \
                     or name the port with --http-port / --http-url",
                )
            }
        };
        let location = header(&seen.headers, "location").unwrap_or_default();
        let to_https = location.to_ascii_lowercase().starts_with("https://");
        match seen.status {
            301 | 308 if to_https => Finding::pass(
                "redirect_https",
                format!("{url} answers {} to {}", seen.status, clip(location, 80)),
            ),
            302 | 303 | 307 if to_https => Finding::warn(
                "redirect_https",
                format!(
                    "{url} answers a temporary {} to {}",
                    seen.status,
                    clip(location, 80)
                ),
                "redirect with 308 (or 301)",
            ),
            status => Finding::fail(
                "redirect_https",
                match status {
                    300..=399 => format!(
                        "{url} redirects to `{}`, not to https://",
                        clip(location, 80)
                    ),
                    _ => format!("{url} answers {status} over plain HTTP"),
                },
                "redirect plain HTTP to HTTPS with 308 (Palisade: redirect_https = true)",
            ),
        }
    }

    async fn cors(&mut self, client: &reqwest::Client) -> Finding {
        let url = self.options.url.clone();
        let simple = self
            .fetch(
                client,
                Method::GET,
                url.clone(),
                &[("origin", FOREIGN_ORIGIN)],
            )
            .await;
        let preflight = self
            .fetch(
                client,
                Method::OPTIONS,
                url,
                &[
                    ("origin", FOREIGN_ORIGIN),
                    ("access-control-request-method", "POST"),
                    ("access-control-request-headers", "content-type"),
                ],
            )
            .await;
        let mut answers: Vec<(&str, &HeaderMap)> = Vec::new();
        if let Ok(seen) = &simple {
            answers.push(("GET", &seen.headers));
        }
        if let Ok(seen) = &preflight {
            answers.push(("preflight", &seen.headers));
        }
        if answers.is_empty() {
            return Finding::fail(
                "cors",
                format!(
                    "no answer with Origin: {FOREIGN_ORIGIN}: {}",
                    simple.err().unwrap_or_default()
                ),
                NO_ANSWER,
            );
        }
        checks::cors(&answers)
    }

    async fn body_limit(&mut self) -> Finding {
        let size = self.options.body_limit + 1;
        let mut path = self.options.url.path().to_string();
        if let Some(query) = self.options.url.query() {
            path.push('?');
            path.push_str(query);
        }
        let Some(budget) = self.budget() else {
            return self.out_of_time("body_limit");
        };
        self.requests += 1;
        self.handshakes += 1;
        let early = budget.min(Duration::from_secs(1));
        let answer = self
            .bounded(transport::post_oversized(
                &self.target,
                &self.roots,
                &path,
                size,
                early,
            ))
            .await;
        match answer {
            Ok(answer) => checks::body_limit(answer),
            Err(e) => Finding::fail(
                "body_limit",
                format!("a POST of {size} bytes: {e}"),
                "answer 413 as soon as Content-Length is over the limit",
            ),
        }
    }

    /// Up to `n` GETs, `BURST_PARALLEL` at a time, until the first 429.
    async fn burst(&mut self, client: &reqwest::Client, n: usize) -> Finding {
        use futures::stream::{FuturesUnordered, StreamExt};
        let mut pending = FuturesUnordered::new();
        let (mut started, mut answered, mut failed) = (0usize, 0usize, 0usize);
        let mut statuses: std::collections::BTreeMap<u16, usize> = Default::default();
        loop {
            while started < n && pending.len() < BURST_PARALLEL && self.budget().is_some() {
                let request = client.get(self.options.url.clone()).send();
                pending.push(async move {
                    request
                        .await
                        .map(|r| (r.status().as_u16(), r.headers().clone()))
                });
                started += 1;
                self.requests += 1;
            }
            let Some(left) = self.deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            match tokio::time::timeout(left, pending.next()).await {
                Ok(Some(Ok((429, headers)))) => {
                    return checks::too_many(answered + 1, n, &headers);
                }
                Ok(Some(Ok((status, _)))) => {
                    answered += 1;
                    *statuses.entry(status).or_default() += 1;
                }
                Ok(Some(Err(_))) => failed += 1,
                Ok(None) | Err(_) => break,
            }
        }
        let statuses: Vec<String> = statuses
            .iter()
            .map(|(status, count)| format!("{count} x {status}"))
            .collect();
        let failed = if failed > 0 {
            format!(", {failed} failed")
        } else {
            String::new()
        };
        Finding::warn(
            "rate_limit",
            format!(
                "no 429 within {} requests ({}{failed})",
                answered,
                statuses.join(", ")
            ),
            "limit requests per client (Palisade: [rate_limits.NAME] key = \"client_ip\"), or \
             raise --allow-load above the limit",
        )
    }
}

async fn read_capped(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < BODY_CAP {
        match response.chunk().await {
            Ok(Some(piece)) => body.extend_from_slice(&piece),
            _ => break,
        }
    }
    body.truncate(BODY_CAP);
    String::from_utf8_lossy(&body).into_owned()
}

/// A client error with its causes, which reqwest keeps in the source chain.
fn describe(e: reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
