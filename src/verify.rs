//! `palisade verify URL`: probes a live deployment from outside, the way a browser or an
//! attacker would meet it, and prints the go/no-go list: one line per check, PASS / WARN / FAIL
//! (SKIP for what was not asked for), what was seen, and the fix. Exit 1 on any FAIL.
//!
//! Bounded: a fixed handful of probes (four TLS connections and seven requests), plus at most
//! `--allow-load N` requests for the rate-limit burst, which is only sent when asked for; every
//! probe has `--timeout`, and the whole run `--deadline`. The oversized body is declared in
//! `Content-Length` and written only while the server has not answered.
//!
//! `options` parses the command line, `probe` runs the probes in report order, `transport`
//! holds what needs rustls or a hand-written request, and `checks` grades what came back.

mod checks;
mod options;
mod probe;
mod transport;

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

pub use options::{Options, DEFAULT_BODY_LIMIT, MAX_BODY_LIMIT, MAX_LOAD};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Grade {
    Pass,
    /// Not probed, because it was not asked for (`rate_limit` without `--allow-load`).
    Skip,
    Warn,
    Fail,
}

impl Grade {
    pub fn label(self) -> &'static str {
        match self {
            Grade::Pass => "PASS",
            Grade::Skip => "SKIP",
            Grade::Warn => "WARN",
            Grade::Fail => "FAIL",
        }
    }
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
        let mut probe = match probe::Probe::new(options, roots, &ca) {
            Ok(probe) => probe,
            Err(e) => {
                return (
                    vec![Finding::fail("connect", e, "give the URL of a host")],
                    0,
                    0,
                )
            }
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
            Ok(text) => crate::outln!("{text}"),
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
                crate::outln!("{grade}  {:<15} {}", f.check, f.reason);
            } else {
                crate::outln!("{grade}  {:<15} {} (fix: {})", f.check, f.reason, f.fix);
            }
        }
        crate::outln!("{summary}");
    }
    i32::from(findings.iter().any(|f| f.grade == Grade::Fail))
}
