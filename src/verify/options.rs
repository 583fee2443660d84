//! The command line of `palisade verify`, parsed once into typed values: a bad flag is a
//! usage error (exit 2) before anything is sent.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;

use crate::config::units::{parse_duration, parse_size};

/// The most requests `--allow-load` may ask for.
pub const MAX_LOAD: usize = 10_000;
/// The largest `--body-limit`: the probe sends one byte more, at most.
pub const MAX_BODY_LIMIT: u64 = 1 << 30;
/// Without `--body-limit`, a body one byte over 16 MiB, the size `palisade audit` warns above.
pub const DEFAULT_BODY_LIMIT: u64 = 16 << 20;

/// What `palisade verify` was asked to probe, and how far it may go.
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
}
