//! Command output on stdout (`version`, `check`, `keys`, `verify`, ...), written with errors
//! ignored. Rust ignores SIGPIPE, so when the reader of a pipe goes away (`palisade ... | head`)
//! a write fails with `BrokenPipe`, and `println!` panics on it: exit status 101 and a
//! backtrace where the command had done its work.

use std::io::Write;

/// Writes one line to stdout; a closed pipe, or any other write error, is ignored.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(args).and_then(|()| out.write_all(b"\n"));
}

/// `println!` without the panic: see [`line`].
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::stdout::line(format_args!($($arg)*))
    };
}
