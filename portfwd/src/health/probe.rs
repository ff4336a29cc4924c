//! One probe of one backend, from the calling task's network namespace: a TCP connect, or an
//! HTTP/1.1 GET whose status must be 2xx or 3xx.
//!
//! The HTTP exchange is hyper's client connection (`hyper::client::conn::http1`: no pool, no
//! redirects, one request), not a hand-written HTTP/1.0 request: hyper parses the status line
//! and headers as strictly as it does for the metrics server, and its client is compiled
//! already (bollard's Docker client uses it). Only the response head is read; the connection
//! is dropped after it.

use std::{fmt, io::ErrorKind, net::SocketAddr, pin::pin, time::Duration};

use http_body_util::Empty;
use hyper::{Request, body::Bytes, header};
use hyper_util::rt::TokioIo;
use nix::errno::Errno;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};

use super::Check;

/// Why a probe failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// RST to the SYN: nothing listens there.
    Refused,
    /// No route, or the neighbour (ARP/NDP) did not answer.
    Unreachable,
    /// Not finished within the check's timeout.
    TimedOut,
    /// The HTTP answer's status was neither 2xx nor 3xx.
    Status(u16),
    /// The answer was not HTTP, or the connection closed before a response head.
    Http(String),
    /// Any other socket error, with the OS's message.
    Io(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused => f.write_str("connection refused"),
            Failure::Unreachable => f.write_str("unreachable"),
            Failure::TimedOut => f.write_str("timed out"),
            Failure::Status(code) => write!(f, "HTTP status {code}"),
            Failure::Http(e) => write!(f, "bad HTTP answer: {e}"),
            Failure::Io(e) => f.write_str(e),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        match e.raw_os_error() {
            Some(n) if n == Errno::ECONNREFUSED as i32 => Failure::Refused,
            Some(n) if n == Errno::EHOSTUNREACH as i32 || n == Errno::ENETUNREACH as i32 => {
                Failure::Unreachable
            }
            Some(n) if n == Errno::ETIMEDOUT as i32 => Failure::TimedOut,
            _ if e.kind() == ErrorKind::TimedOut => Failure::TimedOut,
            _ => Failure::Io(e.to_string()),
        }
    }
}

/// A probe's result: `Ok` means the backend answered as a healthy one does.
pub type Outcome = Result<(), Failure>;

/// One probe of `addr`, bounded by `timeout` (connect and HTTP exchange together).
pub async fn probe(addr: SocketAddr, check: &Check, timeout: Duration) -> Outcome {
    tokio::time::timeout(timeout, attempt(addr, check))
        .await
        .unwrap_or(Err(Failure::TimedOut))
}

/// One probe of `addr` with no time limit of its own (the caller bounds it; see [`probe`]).
pub async fn attempt(addr: SocketAddr, check: &Check) -> Outcome {
    let stream = TcpStream::connect(addr).await?;
    match check {
        Check::Tcp => Ok(()),
        Check::Http { path } => http_exchange(stream, &addr.to_string(), path).await,
    }
}

/// `GET path` over `io` (an open connection), `Host: authority`, and the verdict on the
/// answer's status ([`status_outcome`]). The body is not read.
pub async fn http_exchange<S>(io: S, authority: &str, path: &str) -> Outcome
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = |e: hyper::Error| Failure::Http(e.to_string());
    let request = Request::get(path)
        .header(header::HOST, authority)
        .header(header::USER_AGENT, "portfwd-health")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| Failure::Http(e.to_string()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(http)?;
    // The connection future does the I/O; the response arrives through `sender`. When the
    // connection ends first (the server answered and closed in one go), the response was
    // already handed over, or it never will be: either way the request's future now resolves.
    let mut response = pin!(sender.send_request(request));
    let mut conn = pin!(conn);
    let response = tokio::select! {
        r = &mut response => r,
        c = &mut conn => {
            c.map_err(http)?;
            response.await
        }
    }
    .map_err(http)?;
    status_outcome(response.status().as_u16())
}

/// Healthy answers are 2xx and 3xx (a redirect means a server that works; it is not followed).
pub fn status_outcome(status: u16) -> Outcome {
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(Failure::Status(status))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream, duplex};

    use super::*;

    #[test]
    fn statuses() {
        for ok in [200, 204, 299, 301, 302, 304, 399] {
            assert_eq!(status_outcome(ok), Ok(()), "{ok}");
        }
        for bad in [100, 101, 199, 400, 404, 429, 500, 503, 599] {
            assert_eq!(status_outcome(bad), Err(Failure::Status(bad)), "{bad}");
        }
    }

    /// Plays a server on the other end of an in-memory connection: reads the request head,
    /// then writes `answer` and closes. Returns the request head it read.
    async fn exchange(answer: &'static [u8], path: &str) -> (Outcome, String) {
        let (client, mut server): (DuplexStream, DuplexStream) = duplex(4096);
        let server = tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                match server.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = server.write_all(answer).await;
            let _ = server.shutdown().await;
            String::from_utf8_lossy(&head).into_owned()
        });
        let outcome = http_exchange(client, "172.17.0.2:3000", path).await;
        (outcome, server.await.unwrap())
    }

    #[tokio::test]
    async fn http_answers() {
        let (o, head) = exchange(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            "/healthz",
        )
        .await;
        assert_eq!(o, Ok(()));
        assert!(head.starts_with("GET /healthz HTTP/1.1\r\n"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("host: 172.17.0.2:3000\r\n"),
            "{head}"
        );
        let cases: [(&[u8], Outcome); 6] = [
            (
                b"HTTP/1.1 301 Moved Permanently\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n",
                Ok(()),
            ),
            (b"HTTP/1.0 204 No Content\r\n\r\n", Ok(())),
            (
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
                Err(Failure::Status(500)),
            ),
            (
                b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                Err(Failure::Status(404)),
            ),
            // An answer without a Content-Length (read to EOF): its head decides.
            (
                b"HTTP/1.0 503 Service Unavailable\r\n\r\nbusy",
                Err(Failure::Status(503)),
            ),
            (b"HTTP/1.1 200 OK\r\n\r\n", Ok(())),
        ];
        for (answer, expected) in cases {
            let (o, _) = exchange(answer, "/").await;
            assert_eq!(o, expected, "{}", String::from_utf8_lossy(answer));
        }
    }

    #[tokio::test]
    async fn not_http_is_a_failure() {
        for answer in [&b"SSH-2.0-OpenSSH_9.6\r\n"[..], b"", b"HTTP/1.1 2"] {
            let (o, _) = exchange(answer, "/").await;
            assert!(matches!(o, Err(Failure::Http(_))), "{answer:?}: {o:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_never_answers_times_out() {
        let (client, _server) = duplex(4096);
        let o =
            tokio::time::timeout(Duration::from_millis(500), http_exchange(client, "h", "/")).await;
        assert!(o.is_err(), "no answer: still waiting at the timeout");
    }

    #[test]
    fn socket_errors() {
        let e = |n: Errno| Failure::from(std::io::Error::from_raw_os_error(n as i32));
        assert_eq!(e(Errno::ECONNREFUSED), Failure::Refused);
        assert_eq!(e(Errno::EHOSTUNREACH), Failure::Unreachable);
        assert_eq!(e(Errno::ENETUNREACH), Failure::Unreachable);
        assert_eq!(e(Errno::ETIMEDOUT), Failure::TimedOut);
        assert!(matches!(e(Errno::EMFILE), Failure::Io(_)));
    }
}
