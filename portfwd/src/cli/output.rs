//! A command's output on stdout. Rust ignores SIGPIPE, so when the reader has gone away
//! (`portfwd status | head -1`) a write fails with EPIPE, which `println!` turns into a panic;
//! every command writes through [`print`] instead, which makes that a quiet stop.
use std::io::{self, Write as _};

use super::Failure;

/// Writes `text` to stdout: [`Failure::StdoutClosed`] when the reader has gone away, a message for
/// any other error (a full disk).
pub fn print(text: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe => Failure::StdoutClosed,
            _ => Failure::Message(format!("cannot write to stdout: {e}")),
        })
}

/// [`print`] of `text` and a newline.
pub fn println(text: &str) -> Result<(), Failure> {
    print(&format!("{text}\n"))
}

/// [`println`] of `value` as pretty JSON.
pub fn json(value: &impl serde::Serialize) -> Result<(), Failure> {
    println(&serde_json::to_string_pretty(value).map_err(|e| e.to_string())?)
}
