//! Palisade: a security gateway on Pingora. The command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ::log as logger;
use palisade::{server, state, tls, version};

const USAGE: &str = "\
usage:
  palisade run [--config FILE] [--pid-file F] [--upgrade] [--upgrade-sock S]
                                             start the gateway (default config: gateway.toml);
                                             --upgrade takes the listening sockets of the
                                             running one over S (default: beside F, see
                                             docs/OPERATIONS.md)
  palisade reload --pid-file F               reload the config of the gateway in F (SIGHUP)
  palisade check [FILE]                      validate a config without binding anything
  palisade audit [FILE] [--format json]      grade a config against the production checklists
                                             (exit 1 when any check fails)
  palisade verify URL [--allow-load N] [--format json] [--ca FILE] [--insecure]
                  [--http-port N | --http-url URL] [--body-limit SIZE]
                  [--timeout 10s] [--deadline 60s]
                                             probe a live HTTPS deployment from outside: TLS,
                                             redirect, headers, leaks, 413, CORS, and with
                                             --allow-load a burst meeting 429 (exit 1 on a FAIL)
  palisade keys new [--prefix PFX]           print a fresh API key and its sha256: digest
  palisade keys hash                         print the sha256: digest of each key read from stdin
  palisade version                           print version, git sha and build id
  palisade cert dev [--host NAME]... [--out DIR] [--days N]
                                             write a self-signed development certificate
                                             (default hosts: localhost 127.0.0.1 ::1; DIR: certs;
                                             valid N days, default 365)

exit status: 0 ok, 2 usage error, 78 invalid config";

// mimalloc: glibc's malloc took a sixth of the CPU of a proxied request across threads. It
// replaces malloc and free themselves (the crate's `override` feature) rather than being
// Rust's global allocator: Rust's default allocator then calls malloc for every alignment
// malloc gives anyway, where mimalloc's own Rust allocator calls `mi_malloc_aligned`, whose
// fast path covers only blocks up to 1 KiB whose page has a free block at hand; about twenty
// allocations a request took its slower generic path (see docs/PERFORMANCE.md, "Allocation").
extern crate mimalloc;

fn main() -> ExitCode {
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,palisade=info"),
    )
    .format_timestamp_millis()
    .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let code = match args.as_slice() {
        ["run", rest @ ..] => run(rest),
        ["check"] => check(Path::new("gateway.toml")),
        ["check", file] => check(Path::new(file)),
        ["version"] | ["--version"] | ["-V"] => {
            palisade::outln!(
                "palisade {} (git {}, build {})",
                version::VERSION,
                version::GIT_SHA,
                version::BUILD_ID
            );
            0
        }
        ["cert", "dev", rest @ ..] => cert_dev(rest),
        ["reload", rest @ ..] => reload(rest),
        ["audit", rest @ ..] => audit(rest),
        ["verify", rest @ ..] => match palisade::verify::Options::parse(rest) {
            Ok(options) => palisade::verify::run(&options),
            Err(e) => usage_error(&e),
        },
        ["keys", "new"] => keys_new(""),
        ["keys", "new", "--prefix", prefix] => keys_new(prefix),
        ["keys", "hash"] => keys_hash(),
        ["help"] | ["--help"] | ["-h"] => {
            palisade::outln!("{USAGE}");
            0
        }
        _ => usage_error("unknown command"),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn usage_error(message: &str) -> i32 {
    eprintln!("palisade: {message}\n{USAGE}");
    2
}

fn run(args: &[&str]) -> i32 {
    let mut file = PathBuf::from("gateway.toml");
    let mut upgrade = false;
    let mut pid_file = None;
    let mut upgrade_sock = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match *arg {
            "--config" | "-c" => match rest.next() {
                Some(f) => file = PathBuf::from(f),
                None => return usage_error("--config needs a file"),
            },
            "--pid-file" => match rest.next() {
                Some(f) => pid_file = Some(PathBuf::from(f)),
                None => return usage_error("--pid-file needs a file"),
            },
            "--upgrade" => upgrade = true,
            "--upgrade-sock" => match rest.next() {
                Some(f) => upgrade_sock = Some(PathBuf::from(f)),
                None => return usage_error("--upgrade-sock needs a path"),
            },
            other => return usage_error(&format!("unexpected argument `{other}`")),
        }
    }
    let upgrade_sock = server::upgrade_sock_path(upgrade_sock, pid_file.as_deref());
    server::run(&file, upgrade, pid_file.as_deref(), &upgrade_sock)
}

/// `palisade audit [FILE] [--format json]`: PASS / WARN / FAIL per check; exit 1 on a FAIL.
/// `palisade keys new [--prefix P]`: a fresh key on the first line, its digest (what goes into
/// the config or the key file) on the second.
fn keys_new(prefix: &str) -> i32 {
    let valid = prefix.len() <= 32
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid {
        return usage_error("--prefix takes up to 32 letters, digits, `_` or `-`");
    }
    match palisade::policy::api_key::new_key(prefix) {
        Ok(key) => {
            palisade::outln!("{key}");
            palisade::outln!(
                "{}",
                palisade::policy::api_key::digest_string(key.as_bytes())
            );
            0
        }
        Err(e) => {
            eprintln!("palisade: {e}");
            1
        }
    }
}

/// `palisade keys hash`: one `sha256:` digest per key read from stdin (one per line; blank
/// lines and `#` comments skipped), in order. The keys themselves are never printed.
fn keys_hash() -> i32 {
    use std::io::BufRead;
    for line in std::io::stdin().lock().lines() {
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                eprintln!("palisade: cannot read stdin: {e}");
                return 1;
            }
        };
        let key = line.trim();
        if key.is_empty() || key.starts_with('#') {
            continue;
        }
        palisade::outln!(
            "{}",
            palisade::policy::api_key::digest_string(key.as_bytes())
        );
    }
    0
}

fn audit(args: &[&str]) -> i32 {
    let (file, json) = match args {
        [] => ("gateway.toml", false),
        ["--format", "json"] => ("gateway.toml", true),
        [file] => (*file, false),
        [file, "--format", "json"] | ["--format", "json", file] => (*file, true),
        _ => return usage_error("audit takes [FILE] [--format json]"),
    };
    let state = state::State::default();
    let checked = match server::load_runtime(Path::new(file), &state) {
        Ok(checked) => checked,
        Err(lines) => {
            for line in &lines {
                eprintln!("{line}");
            }
            return server::EXIT_CONFIG;
        }
    };
    let findings = palisade::audit::audit(&checked.config, &checked.runtime);
    // Through `outln!`, as every command's output: `palisade audit | head` must not panic when
    // the reader goes away (see `palisade::stdout`).
    if json {
        match serde_json::to_string_pretty(&findings) {
            Ok(text) => palisade::outln!("{text}"),
            Err(e) => {
                eprintln!("palisade: {e}");
                return 1;
            }
        }
    } else {
        for f in &findings {
            let grade = match f.grade {
                palisade::audit::Grade::Pass => "PASS",
                palisade::audit::Grade::Warn => "WARN",
                palisade::audit::Grade::Fail => "FAIL",
            };
            if f.fix.is_empty() {
                palisade::outln!("{grade}  {:<15} {}", f.check, f.reason);
            } else {
                palisade::outln!("{grade}  {:<15} {} (fix: {})", f.check, f.reason, f.fix);
            }
        }
    }
    let failed = findings
        .iter()
        .any(|f| f.grade == palisade::audit::Grade::Fail);
    i32::from(failed)
}

/// `palisade reload --pid-file F`: SIGHUP to the gateway whose pid is in F.
fn reload(args: &[&str]) -> i32 {
    let ["--pid-file", file] = args else {
        return usage_error("reload needs --pid-file FILE");
    };
    let pid = match std::fs::read_to_string(file) {
        Ok(text) => text.trim().to_string(),
        Err(e) => {
            eprintln!("palisade: cannot read {file}: {e}");
            return 1;
        }
    };
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        eprintln!("palisade: {file} does not hold a process id");
        return 1;
    }
    match std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
    {
        Ok(status) if status.success() => {
            palisade::outln!("sent SIGHUP to {pid}; the result is in its log and in gateway_config_reloads_total");
            0
        }
        _ => {
            eprintln!("palisade: cannot signal process {pid}");
            1
        }
    }
}

fn check(file: &Path) -> i32 {
    let state = state::State::default();
    match server::load_runtime(file, &state) {
        Ok(checked) => {
            for warning in &checked.warnings {
                eprintln!("{warning}");
            }
            palisade::outln!("{}: ok: {}", file.display(), checked.runtime.summary());
            0
        }
        Err(lines) => {
            for line in &lines {
                eprintln!("{line}");
            }
            let errors = lines.iter().filter(|l| !l.contains(": warning: ")).count();
            eprintln!("{}: {errors} error(s)", file.display());
            server::EXIT_CONFIG
        }
    }
}

fn cert_dev(args: &[&str]) -> i32 {
    let mut hosts = Vec::new();
    let mut out = PathBuf::from("certs");
    let mut days = 365;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match (*arg, rest.next()) {
            ("--host", Some(h)) => hosts.push(h.to_string()),
            ("--out", Some(d)) => out = PathBuf::from(d),
            ("--days", Some(n)) => match n.parse::<u32>() {
                Ok(n) if n > 0 => days = n,
                _ => return usage_error("--days needs a whole number of days, at least 1"),
            },
            (other, _) => return usage_error(&format!("unexpected argument `{other}`")),
        }
    }
    match tls::write_dev_cert(&out, &hosts, days) {
        Ok((cert, key)) => {
            palisade::outln!(
                "wrote {} and {} (development only; keys are never committed)",
                cert.display(),
                key.display()
            );
            0
        }
        Err(e) => {
            logger::error!("{e}");
            eprintln!("palisade: {e}");
            1
        }
    }
}
