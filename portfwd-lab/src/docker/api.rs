//! Docker's Engine API over its unix socket: one `GET` per connection, HTTP/1.0, so that the
//! answer is never chunked and ends when dockerd closes the connection. Every call is bounded by
//! a time limit (a read timeout renewed until the deadline).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// An answer of the API: the HTTP status and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status code (200, 404, ...).
    pub status: u16,
    /// The body, as sent (JSON, or newline-delimited JSON for `/events`).
    pub body: String,
}

/// `GET path` on the API socket `socket`; the whole answer within `timeout`. A `/events` stream
/// ends only when asked with `until`.
pub(crate) fn get(socket: &Path, path: &str, timeout: Duration) -> Result<Response> {
    let deadline = Instant::now() + timeout;
    let mut stream = UnixStream::connect(socket)
        .with_context(|| format!("connecting to {}", socket.display()))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n")
        .with_context(|| format!("sending GET {path}"))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("GET {path}: no complete answer within {timeout:?}");
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e).with_context(|| format!("reading the answer to GET {path}")),
        }
    }
    parse(&raw).with_context(|| format!("the answer to GET {path}"))
}

/// Splits an HTTP/1.x answer into its status and body.
fn parse(raw: &[u8]) -> Result<Response> {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("no end of headers in {} bytes", raw.len());
    };
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    Ok(Response {
        status,
        body: body.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_split_into_status_and_body() {
        let raw = b"HTTP/1.0 200 OK\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\n\r\n{\"a\":1}\n";
        let r = parse(raw).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "{\"a\":1}\n");
        let r = parse(b"HTTP/1.1 404 Not Found\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.as_str()), (404, ""));
        assert!(parse(b"HTTP/1.0 200 OK\r\n").is_err());
        assert!(parse(b"garbage\r\n\r\n").is_err());
    }
}
