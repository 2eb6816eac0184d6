//! The metrics endpoint (`--metrics-listen`): `GET /metrics`, `/healthz` and `/readyz`, one
//! request per connection, on one thread of its own that only reads the counters, so a scrape
//! never waits for a worker and a worker never waits for a scrape.
//!
//! Why `httparse` and a loop here rather than an HTTP server crate: `tiny_http` (0.12.0, the
//! latest, from 2022) runs an accept thread plus a pool that grows by one thread per concurrent
//! connection, with no bound, which breaks the server's rule that its threads are bounded (and
//! lets a flood of slow scrapers start threads); `astra` (hyper underneath) serves each
//! connection on a pool worker until it ends, so one idle client with a pool of one blocks
//! every probe. Three fixed paths need neither routing nor keep-alive: `httparse` (hyper's own
//! HTTP/1 parser, kept by hyper's maintainers) reads the request line, every read and write is
//! bounded by [`IO_TIMEOUT`], and the answer closes the connection.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::export::{Exporter, CONTENT_TYPE};
use crate::error::Error;
use crate::shutdown::Shutdown;

/// How long one client may take to send its request or read the answer: a slow or silent client
/// delays the next probe by at most this.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// The largest request head read; a larger one is answered 431.
const MAX_REQUEST: usize = 8 << 10;
/// How long `/readyz` waits for the state store (with `--state-required-for-ready`): well
/// under a probe's usual 1 s timeout, so a silent store is a 503, not a probe timeout.
const STATE_PROBE: Duration = Duration::from_millis(250);
/// Pause after a failed accept (out of file descriptors), instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The bound metrics socket, not serving yet.
pub struct Endpoint {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Endpoint {
    /// Binds `addr` (port 0 picks a free one); a failure is a startup error (exit 2).
    pub fn bind(addr: SocketAddr) -> Result<Endpoint, Error> {
        let bind_error = |source| Error::MetricsBind { addr, source };
        let listener = TcpListener::bind(addr).map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        Ok(Endpoint { listener, addr })
    }

    /// The address it listens on (the port chosen, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves on the `sandport-metrics` thread until the process exits. `/readyz` answers 503
    /// from the moment `shutdown` is triggered, and while the state store cannot answer if the
    /// exporter checks it ([`Exporter::with_state_check`]).
    pub fn serve(self, exporter: Exporter, shutdown: Shutdown) -> Result<(), Error> {
        std::thread::Builder::new()
            .name("sandport-metrics".into())
            .spawn(move || loop {
                match self.listener.accept() {
                    Ok((stream, peer)) => {
                        if let Err(e) = answer(stream, &exporter, &shutdown) {
                            tracing::debug!(%peer, "metrics request failed: {e}");
                        }
                    }
                    Err(e) => {
                        tracing::warn!("metrics endpoint cannot accept: {e}");
                        std::thread::sleep(ACCEPT_BACKOFF);
                    }
                }
            })
            .map(drop)
            .map_err(|e| {
                Error::Runtime(anyhow::Error::new(e).context("cannot start the metrics thread"))
            })
    }
}

/// Reads one request from `stream` and answers it.
fn answer(mut stream: TcpStream, exporter: &Exporter, shutdown: &Shutdown) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut buf = vec![0; MAX_REQUEST];
    let mut len = 0;
    let (method, path) = loop {
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                let method = request.method.unwrap_or_default().to_string();
                break (method, request.path.unwrap_or_default().to_string());
            }
            Ok(httparse::Status::Partial) if len < buf.len() => continue,
            Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                return respond(&mut stream, Status::TooLarge, "request too large\n", false)
            }
            Err(_) => return respond(&mut stream, Status::BadRequest, "bad request\n", false),
        }
    };
    let head = method == "HEAD";
    if method != "GET" && !head {
        return respond(&mut stream, Status::BadMethod, "only GET and HEAD\n", false);
    }
    match path.split('?').next().unwrap_or_default() {
        "/metrics" => match exporter.render() {
            Ok(body) => respond(&mut stream, Status::Metrics, &body, head),
            Err(_) => respond(&mut stream, Status::Error, "cannot encode\n", head),
        },
        "/healthz" => respond(&mut stream, Status::Ok, "ok\n", head),
        "/readyz" if shutdown.is_triggered() => {
            respond(&mut stream, Status::Unavailable, "draining\n", head)
        }
        "/readyz" => match exporter.state_ready(Instant::now() + STATE_PROBE) {
            Ok(()) => respond(&mut stream, Status::Ok, "ready\n", head),
            Err(e) => {
                tracing::debug!("not ready: {}", crate::error::report(&e));
                respond(
                    &mut stream,
                    Status::Unavailable,
                    "state store unavailable\n",
                    head,
                )
            }
        },
        _ => respond(&mut stream, Status::NotFound, "not found\n", head),
    }
}

/// The answers this endpoint gives.
#[derive(Clone, Copy)]
enum Status {
    Ok,
    Metrics,
    BadRequest,
    NotFound,
    BadMethod,
    TooLarge,
    Error,
    Unavailable,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Status::Ok | Status::Metrics => "200 OK",
            Status::BadRequest => "400 Bad Request",
            Status::NotFound => "404 Not Found",
            Status::BadMethod => "405 Method Not Allowed",
            Status::TooLarge => "431 Request Header Fields Too Large",
            Status::Error => "500 Internal Server Error",
            Status::Unavailable => "503 Service Unavailable",
        }
    }
}

/// Writes the status line, headers and (unless `head`) the body, then the connection closes.
fn respond(stream: &mut TcpStream, status: Status, body: &str, head: bool) -> io::Result<()> {
    let content_type = match status {
        Status::Metrics => CONTENT_TYPE,
        _ => "text/plain; charset=utf-8",
    };
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        status.line(),
        body.len()
    );
    if matches!(status, Status::BadMethod) {
        out.insert_str(out.len() - 2, "Allow: GET, HEAD\r\n");
    }
    if !head {
        out.push_str(body);
    }
    stream.write_all(out.as_bytes())?;
    stream.flush()
}
