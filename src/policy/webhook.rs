//! A route's `webhook = { scheme, secret, header, tolerance }`: the request body must carry a
//! valid HMAC-SHA256 signature, checked before the app sees it.
//!
//! - `stripe`: `Stripe-Signature: t=<unix time>,v1=<hex>[,v1=<hex>...]`, signed over
//!   `"<t>.<body>"`; a timestamp further than `tolerance` from now is refused (replay).
//! - `hmac-sha256`: `<header>: sha256=<hex>` over the body (GitHub's `X-Hub-Signature-256`).
//!
//! Several secrets are accepted (rotation), every signature is compared in constant time.

use std::path::Path;

use http::{HeaderMap, HeaderName};
use ring::hmac;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::config::diagnostics::Diagnostics;
use crate::config::units::HumanDuration;
use crate::config::{KeyPath, SecretRef};

/// One secret or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    untagged,
    expecting = "a secret ({ env = \"NAME\" } or { file = \"/path\" }) or a list of them"
)]
pub enum Secrets {
    One(SecretRef),
    Many(Vec<SecretRef>),
}

/// `webhook = { ... }` on a route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `stripe` | `hmac-sha256`. Required.
    pub scheme: String,
    /// The signing secret(s). Required.
    pub secret: Secrets,
    /// The signature header. Default `Stripe-Signature` (stripe), `X-Hub-Signature-256`
    /// (hmac-sha256).
    pub header: Option<String>,
    /// How old (or how far ahead) a Stripe timestamp may be. Default `"5m"`.
    pub tolerance: Option<HumanDuration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Stripe { tolerance_secs: u64 },
    HmacSha256,
}

pub struct WebhookPolicy {
    scheme: Scheme,
    pub header: HeaderName,
    keys: Vec<hmac::Key>,
}

/// Why a signature was refused: the `reason` of the audit line and the error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Missing,
    Malformed,
    Stale,
    Mismatch,
}

impl Failure {
    /// The `result` label of `gateway_webhook_verifications_total`.
    pub fn label(self) -> &'static str {
        match self {
            Failure::Missing => "missing",
            Failure::Malformed => "malformed",
            Failure::Stale => "stale",
            Failure::Mismatch => "mismatch",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Failure::Missing => "the webhook signature header is missing",
            Failure::Malformed => "the webhook signature header is malformed",
            Failure::Stale => "the webhook timestamp is outside the tolerance",
            Failure::Mismatch => "the webhook signature does not match",
        }
    }
}

impl WebhookPolicy {
    pub fn compile(
        cfg: &WebhookConfig,
        base: &Path,
        path: &KeyPath,
        diags: &mut Diagnostics,
    ) -> Option<WebhookPolicy> {
        let errors_before = diags.error_count();
        let (scheme, default_header) = match cfg.scheme.as_str() {
            "stripe" => {
                let tolerance = cfg.tolerance.as_ref().map_or(300, |t| t.0.as_secs());
                if tolerance == 0 {
                    diags.error(path.key("tolerance"), "must be at least 1s");
                }
                (
                    Scheme::Stripe {
                        tolerance_secs: tolerance,
                    },
                    "stripe-signature",
                )
            }
            "hmac-sha256" => {
                if cfg.tolerance.is_some() {
                    diags.error(
                        path.key("tolerance"),
                        "`hmac-sha256` signatures carry no timestamp; `tolerance` is for `stripe`",
                    );
                }
                (Scheme::HmacSha256, "x-hub-signature-256")
            }
            other => {
                diags.error(
                    path.key("scheme"),
                    format!("`{other}` is not stripe or hmac-sha256"),
                );
                (Scheme::HmacSha256, "x-hub-signature-256")
            }
        };
        let header = match cfg.header.as_deref() {
            None => HeaderName::from_static(default_header),
            Some(h) => match HeaderName::from_bytes(h.trim().as_bytes()) {
                Ok(h) => h,
                Err(_) => {
                    diags.error(path.key("header"), format!("`{h}` is not a header name"));
                    HeaderName::from_static(default_header)
                }
            },
        };
        let refs: Vec<&SecretRef> = match &cfg.secret {
            Secrets::One(s) => vec![s],
            Secrets::Many(list) => list.iter().collect(),
        };
        if refs.is_empty() {
            diags.error(path.key("secret"), "needs at least one secret");
        }
        let mut keys = Vec::new();
        for (i, secret) in refs.into_iter().enumerate() {
            let at = match &cfg.secret {
                Secrets::One(_) => path.key("secret"),
                Secrets::Many(_) => path.key("secret").index(i),
            };
            match secret.resolve(base) {
                Ok(s) if s.expose().trim().len() < 16 => diags.error(
                    at,
                    "a signing secret shorter than 16 characters can be guessed",
                ),
                Ok(s) => keys.push(hmac::Key::new(
                    hmac::HMAC_SHA256,
                    s.expose().trim().as_bytes(),
                )),
                Err(e) => diags.error(at, e),
            }
        }
        if diags.error_count() > errors_before {
            return None;
        }
        Some(WebhookPolicy {
            scheme,
            header,
            keys,
        })
    }

    /// Checks the signature of `body`, received at `now_secs`.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now_secs: u64) -> Result<(), Failure> {
        let value = headers.get(&self.header).ok_or(Failure::Missing)?;
        let value = value.to_str().map_err(|_| Failure::Malformed)?;
        match self.scheme {
            Scheme::Stripe { tolerance_secs } => {
                let (timestamp, signatures) = parse_stripe(value)?;
                if now_secs.abs_diff(timestamp) > tolerance_secs {
                    return Err(Failure::Stale);
                }
                let t = timestamp.to_string();
                self.any_matches(&signatures, |ctx| {
                    ctx.update(t.as_bytes());
                    ctx.update(b".");
                    ctx.update(body);
                })
            }
            Scheme::HmacSha256 => {
                let hex_part = value.trim();
                let hex_part = hex_part.strip_prefix("sha256=").unwrap_or(hex_part);
                let signature = decode_signature(hex_part).ok_or(Failure::Malformed)?;
                self.any_matches(&[signature], |ctx| ctx.update(body))
            }
        }
    }

    /// Whether any secret's tag equals any of `signatures`; every pair is compared.
    fn any_matches(
        &self,
        signatures: &[[u8; 32]],
        feed: impl Fn(&mut hmac::Context),
    ) -> Result<(), Failure> {
        let mut matched = subtle::Choice::from(0);
        for key in &self.keys {
            let mut ctx = hmac::Context::with_key(key);
            feed(&mut ctx);
            let tag = ctx.sign();
            for signature in signatures {
                matched |= tag.as_ref().ct_eq(signature);
            }
        }
        if bool::from(matched) {
            Ok(())
        } else {
            Err(Failure::Mismatch)
        }
    }
}

/// `t=<secs>,v1=<hex>,...`: the timestamp and every `v1` signature (other schemes ignored).
fn parse_stripe(value: &str) -> Result<(u64, Vec<[u8; 32]>), Failure> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in value.split(',') {
        let Some((k, v)) = item.trim().split_once('=') else {
            continue;
        };
        match k {
            "t" => timestamp = Some(v.parse::<u64>().map_err(|_| Failure::Malformed)?),
            "v1" => {
                if let Some(sig) = decode_signature(v) {
                    signatures.push(sig);
                }
            }
            _ => {}
        }
    }
    match timestamp {
        Some(t) if !signatures.is_empty() && signatures.len() <= 8 => Ok((t, signatures)),
        _ => Err(Failure::Malformed),
    }
}

fn decode_signature(hex_text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_text.trim(), &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const SECRET: &str = "whsec_test_secret_0123456789";

    fn policy(text: &str) -> WebhookPolicy {
        let cfg: WebhookConfig = toml::from_str(text).unwrap();
        let mut diags = Diagnostics::default();
        let p = WebhookPolicy::compile(&cfg, Path::new("."), &KeyPath::root(), &mut diags);
        p.unwrap_or_else(|| panic!("{:?}", diags.list))
    }

    fn sign(secret: &str, parts: &[&[u8]]) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
        let mut ctx = hmac::Context::with_key(&key);
        for p in parts {
            ctx.update(p);
        }
        hex::encode(ctx.sign().as_ref())
    }

    fn header(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn stripe_signatures_are_checked_with_their_timestamp() {
        let p = policy(&format!("scheme = \"stripe\"\nsecret = \"{SECRET}\"\n"));
        let body = br#"{"id":"evt_1"}"#;
        let now = 1_700_000_000u64;
        let good = sign(SECRET, &[b"1700000000.", body]);
        let h = header(
            "stripe-signature",
            &format!("t={now},v1=00{},v1={good},v0=ab", &good[2..]),
        );
        assert_eq!(p.verify(&h, body, now + 10), Ok(()));
        assert_eq!(
            p.verify(&h, b"{\"id\":\"evt_2\"}", now),
            Err(Failure::Mismatch)
        );
        assert_eq!(p.verify(&h, body, now + 301), Err(Failure::Stale));
        let h = header("stripe-signature", &format!("v1={good}"));
        assert_eq!(p.verify(&h, body, now), Err(Failure::Malformed));
        assert_eq!(
            p.verify(&HeaderMap::new(), body, now),
            Err(Failure::Missing)
        );
    }

    #[test]
    fn every_listed_secret_is_accepted_while_rotating() {
        let p = policy(&format!(
            "scheme = \"hmac-sha256\"\nsecret = [\"{SECRET}\", \"another_secret_abcdefgh\"]\n"
        ));
        for secret in [SECRET, "another_secret_abcdefgh"] {
            let h = header(
                "x-hub-signature-256",
                &format!("sha256={}", sign(secret, &[b"payload"])),
            );
            assert_eq!(p.verify(&h, b"payload", 0), Ok(()));
        }
        let h = header(
            "x-hub-signature-256",
            &format!("sha256={}", sign("wrong_secret_abcdefghij", &[b"payload"])),
        );
        assert_eq!(p.verify(&h, b"payload", 0), Err(Failure::Mismatch));
    }
}
