//! `palisade verify URL`: probes a live deployment from outside, the way a browser or an
//! attacker would meet it, and prints the go/no-go list: one line per check, PASS / WARN / FAIL
//! (SKIP for what was not asked for), what was seen, and the fix. Exit 1 on any FAIL.
//!
//! Bounded: a fixed handful of probes (three TLS handshakes and eight requests), plus at most
//! `--allow-load N` requests for the rate-limit burst, which is only sent when asked for; every
//! probe has `--timeout`, and the whole run `--deadline`. The oversized body is declared in
//! `Content-Length` and written only while the server has not answered.

mod checks;
mod transport;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, Method};
use reqwest::Url;
use rustls::pki_types::CertificateDer;
use rustls::{ProtocolVersion, RootCertStore};
use serde::Serialize;

use crate::config::units::{parse_duration, parse_size};
use checks::{clip, header, FOREIGN_ORIGIN};
use transport::{Handshake, Legacy, Offer, Target};

/// The most requests `--allow-load` may ask for.
pub const MAX_LOAD: usize = 10_000;
/// The largest `--body-limit`: the probe sends one byte more, at most.
pub const MAX_BODY_LIMIT: u64 = 1 << 30;
/// Without `--body-limit`, a body one byte over 16 MiB, the size `palisade audit` warns above.
pub const DEFAULT_BODY_LIMIT: u64 = 16 << 20;
/// Requests of the burst in flight at once.
const BURST_PARALLEL: usize = 8;
/// How much of a body is read to look for leaks.
const BODY_CAP: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Grade {
    Pass,
    /// Not probed, because it was not asked for (`rate_limit` without `--allow-load`).
    Skip,
    Warn,
    Fail,
}

/// One line of the report; the same fields as `palisade audit`'s findings.
#[derive(Debug, Serialize)]
pub struct Finding {
    pub grade: Grade,
    pub check: &'static str,
    /// What was seen.
    pub reason: String,
    /// What to change; empty on a pass.
    pub fix: String,
}

impl Finding {
    pub fn pass(check: &'static str, reason: impl Into<String>) -> Finding {
        Finding::new(Grade::Pass, check, reason, "")
    }
    pub fn skip(check: &'static str, reason: impl Into<String>) -> Finding {
        Finding::new(Grade::Skip, check, reason, "")
    }
    pub fn warn(check: &'static str, reason: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding::new(Grade::Warn, check, reason, fix)
    }
    pub fn fail(check: &'static str, reason: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding::new(Grade::Fail, check, reason, fix)
    }
    fn new(
        grade: Grade,
        check: &'static str,
        reason: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            grade,
            check,
            reason: reason.into(),
            fix: fix.into(),
        }
    }
}

/// The command line of `palisade verify`, parsed once into typed values.
#[derive(Debug, Clone)]
pub struct Options {
    /// The HTTPS URL to probe; its path is the one the requests go to.
    pub url: Url,
    /// The plain-HTTP URL expected to redirect: the same host and path on port 80, unless
    /// `--http-port` or `--http-url` says otherwise.
    pub http_url: Url,
    /// Requests the rate-limit burst may send; `None` sends none.
    pub allow_load: Option<usize>,
    pub json: bool,
    /// Do not fail an untrusted certificate (it is still reported, as a warning).
    pub insecure: bool,
    /// A PEM file of CA certificates to trust on top of the public roots.
    pub ca: Option<PathBuf>,
    /// The limit of each probe.
    pub timeout: Duration,
    /// The limit of the whole run.
    pub deadline: Duration,
    /// The route's body limit: the probe sends one byte more.
    pub body_limit: u64,
}

impl Options {
    pub fn parse(args: &[&str]) -> Result<Options, String> {
        let mut url = None;
        let mut http_url = None;
        let mut http_port = None;
        let mut options = Options {
            url: Url::parse("https://localhost/").map_err(|e| e.to_string())?,
            http_url: Url::parse("http://localhost/").map_err(|e| e.to_string())?,
            allow_load: None,
            json: false,
            insecure: false,
            ca: None,
            timeout: Duration::from_secs(10),
            deadline: Duration::from_secs(60),
            body_limit: DEFAULT_BODY_LIMIT,
        };
        let mut rest = args.iter().copied();
        while let Some(arg) = rest.next() {
            let mut value = || {
                rest.next()
                    .ok_or_else(|| format!("verify: {arg} needs a value"))
            };
            match arg {
                "--allow-load" => {
                    let v = value()?;
                    let n = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_LOAD).contains(n));
                    options.allow_load = Some(n.ok_or_else(|| {
                        format!("verify: --allow-load takes 1 to {MAX_LOAD} requests, not `{v}`")
                    })?);
                }
                "--format" => match value()? {
                    "json" => options.json = true,
                    "text" => options.json = false,
                    other => {
                        return Err(format!("verify: --format is json or text, not `{other}`"))
                    }
                },
                "--insecure" | "-k" => options.insecure = true,
                "--ca" => options.ca = Some(PathBuf::from(value()?)),
                "--timeout" => options.timeout = positive_duration("--timeout", value()?)?,
                "--deadline" => options.deadline = positive_duration("--deadline", value()?)?,
                "--body-limit" => {
                    let v = value()?;
                    let size = parse_size(v).map_err(|e| format!("verify: --body-limit: {e}"))?;
                    if size > MAX_BODY_LIMIT {
                        return Err(format!("verify: --body-limit is at most 1GiB, not `{v}`"));
                    }
                    options.body_limit = size;
                }
                "--http-url" => {
                    let v = value()?;
                    let u = Url::parse(v).map_err(|e| format!("verify: --http-url `{v}`: {e}"))?;
                    if u.scheme() != "http" || u.host_str().is_none() {
                        return Err(format!(
                            "verify: --http-url needs an http:// URL with a host, not `{v}`"
                        ));
                    }
                    http_url = Some(u);
                }
                "--http-port" => {
                    let v = value()?;
                    let port = v.parse::<u16>().ok().filter(|p| *p > 0);
                    http_port = Some(port.ok_or_else(|| {
                        format!("verify: --http-port needs a port number, not `{v}`")
                    })?);
                }
                flag if flag.starts_with('-') => {
                    return Err(format!("verify: unknown option `{flag}`"))
                }
                u if url.is_none() => url = Some(u),
                extra => return Err(format!("verify: one URL only (`{extra}` is a second)")),
            }
        }
        let Some(written) = url else {
            return Err("verify needs the HTTPS URL to probe".into());
        };
        let url = Url::parse(written).map_err(|e| format!("verify: `{written}`: {e}"))?;
        if url.scheme() != "https" || url.host_str().is_none() {
            return Err(format!(
                "verify probes an https:// URL, not `{written}` (plain HTTP is checked with \
                 --http-port or --http-url)"
            ));
        }
        options.http_url = match (http_url, http_port) {
            (Some(_), Some(_)) => {
                return Err("verify: give --http-url or --http-port, not both".into())
            }
            (Some(u), None) => u,
            (None, port) => {
                let mut u = url.clone();
                u.set_scheme("http")
                    .and_then(|()| u.set_port(port))
                    .map_err(|()| format!("verify: no plain-HTTP URL for `{written}`"))?;
                u
            }
        };
        options.url = url;
        Ok(options)
    }
}

fn positive_duration(flag: &str, text: &str) -> Result<Duration, String> {
    match parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(format!("verify: {flag} must be more than 0")),
        Err(e) => Err(format!("verify: {flag}: {e}")),
    }
}

/// Runs the probes and prints the report. Exit status: 0 when nothing failed, 1 on any FAIL,
/// 2 when the `--ca` file cannot be used.
pub fn run(options: &Options) -> i32 {
    let ca = match &options.ca {
        Some(path) => match transport::read_pem_certs(path) {
            Ok(certs) => certs,
            Err(e) => {
                eprintln!("palisade: verify: --ca: {e}");
                return 2;
            }
        },
        None => Vec::new(),
    };
    let roots = match transport::roots(&ca) {
        Ok(roots) => Arc::new(roots),
        Err(e) => {
            eprintln!("palisade: verify: --ca: {e}");
            return 2;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("palisade: verify: cannot start: {e}");
            return 1;
        }
    };
    let started = Instant::now();
    let (findings, requests, handshakes) = runtime.block_on(async {
        let mut probe = match Probe::new(options, roots, &ca) {
            Ok(probe) => probe,
            Err(e) => return (vec![Finding::fail("connect", e, "")], 0, 0),
        };
        let findings = probe.all().await;
        (findings, probe.requests, probe.handshakes)
    });
    let count = |g| findings.iter().filter(|f| f.grade == g).count();
    let summary = format!(
        "{}: {} pass, {} warn, {} fail, {} skipped ({requests} requests, {handshakes} TLS \
         handshakes, {:.1}s)",
        options.url,
        count(Grade::Pass),
        count(Grade::Warn),
        count(Grade::Fail),
        count(Grade::Skip),
        started.elapsed().as_secs_f64()
    );
    if options.json {
        match serde_json::to_string_pretty(&findings) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("palisade: {e}");
                return 1;
            }
        }
        eprintln!("{summary}");
    } else {
        for f in &findings {
            let grade = f.grade.label();
            if f.fix.is_empty() {
                println!("{grade}  {:<15} {}", f.check, f.reason);
            } else {
                println!("{grade}  {:<15} {} (fix: {})", f.check, f.reason, f.fix);
            }
        }
        println!("{summary}");
    }
    i32::from(findings.iter().any(|f| f.grade == Grade::Fail))
}

/// What one HTTP answer showed: its status, headers, and the start of its body.
struct Seen {
    status: u16,
    headers: HeaderMap,
    body: String,
}

struct Probe<'a> {
    options: &'a Options,
    target: Target,
    roots: Arc<RootCertStore>,
    ca: &'a [CertificateDer<'static>],
    deadline: Instant,
    requests: usize,
    handshakes: usize,
}

impl<'a> Probe<'a> {
    fn new(
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

    async fn all(&mut self) -> Vec<Finding> {
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
                out.push(Finding::fail("connect", e, ""));
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
                        "",
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
            Err(e) => Finding::fail("healthz", format!("GET /healthz: {e}"), ""),
        });
        out.push(match &not_found {
            Ok(seen) => checks::not_found(
                &random,
                seen.status,
                header(&seen.headers, "content-type"),
                &seen.body,
            ),
            Err(e) => Finding::fail("not_found", format!("GET {random}: {e}"), ""),
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
                Finding::fail("certificate", "the server sent no certificate", ""),
                Finding::fail("cert_expiry", "the server sent no certificate", ""),
            ];
        };
        let parsed = match x509_parser::parse_x509_certificate(leaf) {
            Ok((_, parsed)) => parsed,
            Err(e) => {
                let reason = format!("the certificate cannot be read: {e}");
                return vec![
                    Finding::fail("certificate", reason.clone(), ""),
                    Finding::fail("cert_expiry", reason, ""),
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
                "serve a certificate for this name from a public CA, with its chain \
                 (or pass --ca FILE for a private CA)",
            ),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let not_before = parsed.validity().not_before.timestamp();
        let not_after = parsed.validity().not_after.timestamp();
        let days = (not_after - now).div_euclid(86_400);
        let when = date(not_after);
        let expiry = if now < not_before {
            Finding::fail(
                "cert_expiry",
                format!("not valid before {}", date(not_before)),
                "check the server's clock, or reissue the certificate",
            )
        } else if now >= not_after {
            Finding::fail(
                "cert_expiry",
                format!("expired on {when} ({} days ago)", -days),
                "renew the certificate (and alert on gateway_tls_cert_expiry_timestamp_seconds)",
            )
        } else if days < checks::EXPIRY_WARN_DAYS {
            Finding::warn(
                "cert_expiry",
                format!("expires in {days} days ({when})"),
                "renew the certificate now",
            )
        } else {
            Finding::pass("cert_expiry", format!("expires in {days} days ({when})"))
        };
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
                "",
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

/// `2026-11-23` for a Unix time.
fn date(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!("{}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()),
        Err(_) => unix.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_http_url_is_the_same_host_on_port_80_unless_named() {
        let o = Options::parse(&["https://api.example.com:8443/v1/x?y=1"]).expect("parse");
        assert_eq!(o.http_url.as_str(), "http://api.example.com/v1/x?y=1");
        let o =
            Options::parse(&["https://localhost:8443/a", "--http-port", "8080"]).expect("parse");
        assert_eq!(o.http_url.as_str(), "http://localhost:8080/a");
        let o = Options::parse(&[
            "--http-url",
            "http://www.example.com/",
            "https://example.com/",
        ])
        .expect("parse");
        assert_eq!(o.http_url.as_str(), "http://www.example.com/");
    }

    #[test]
    fn flags_are_typed_and_bounded() {
        let o = Options::parse(&[
            "https://x.example/",
            "--allow-load",
            "50",
            "--format",
            "json",
            "--timeout",
            "3s",
            "--body-limit",
            "64KiB",
            "--insecure",
        ])
        .expect("parse");
        assert_eq!(o.allow_load, Some(50));
        assert!(o.json && o.insecure);
        assert_eq!(o.timeout, Duration::from_secs(3));
        assert_eq!(o.body_limit, 65_536);
        assert_eq!(
            Options::parse(&["https://x.example/"])
                .expect("parse")
                .body_limit,
            16 << 20
        );
        for bad in [
            &["http://x.example/"][..],
            &[][..],
            &["https://x.example/", "https://y.example/"][..],
            &["https://x.example/", "--allow-load", "0"][..],
            &["https://x.example/", "--allow-load", "10001"][..],
            &["https://x.example/", "--timeout", "0s"][..],
            &["https://x.example/", "--body-limit", "2GiB"][..],
            &[
                "https://x.example/",
                "--http-port",
                "80",
                "--http-url",
                "http://a/",
            ][..],
            &["https://x.example/", "--http-url", "https://a/"][..],
            &["https://x.example/", "--format", "yaml"][..],
            &["https://x.example/", "--ca"][..],
            &["https://x.example/", "--nope"][..],
        ] {
            assert!(Options::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dates_are_iso() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(1_795_432_812), "2026-11-23");
    }
}
