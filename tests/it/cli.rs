//! The command line's own output: a reader that goes away is not a crash.

use std::process::{Command, Stdio};

use crate::harness::BIN;

/// `palisade version | head -c0` and the like: stdout is a pipe whose reader is already gone,
/// so every write fails with `BrokenPipe`. The command still does its work and exits with
/// its own status, without a panic (status 101 and a backtrace, with `println!`).
#[test]
fn output_into_a_closed_pipe_is_not_a_panic() {
    for args in [&["version"][..], &["help"], &["keys", "new"]] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = Command::new(BIN)
            .args(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .expect("run palisade");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "palisade {args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "palisade {args:?}: {stderr}");
    }
}
