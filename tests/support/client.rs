//! A TCP client whose every read is bounded by a timeout, and the framing helpers.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::REPLY_TIMEOUT;

/// Why a receive did not produce a message.
#[derive(Debug)]
pub enum RecvError {
    /// Nothing (complete) arrived within the timeout.
    Timeout,
    /// The server closed the connection (EOF, or reset/aborted).
    Closed(String),
    /// Some other I/O error.
    Io(io::Error),
}

impl RecvError {
    pub fn is_closed(&self) -> bool {
        matches!(self, RecvError::Closed(_))
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// A TCP client with an internal receive buffer; every read is bounded by a timeout.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
}

impl Client {
    /// Connects with a 5s timeout; panics on failure.
    pub fn connect(addr: SocketAddr) -> Client {
        Client::try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    pub fn try_connect(addr: SocketAddr) -> io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        Ok(Client::from_stream(stream))
    }

    /// Connects from the local IPv4 address `source` (another address of the loopback network,
    /// such as 127.0.0.2, is another client address to the server); panics on failure.
    pub fn connect_from(source: [u8; 4], to: SocketAddr) -> Client {
        let stream = stream_from(source, to);
        stream.set_nodelay(true).expect("set_nodelay");
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .expect("set_write_timeout");
        Client::from_stream(stream)
    }

    /// Wraps an already connected stream.
    pub fn from_stream(stream: TcpStream) -> Client {
        Client {
            stream,
            buf: Vec::new(),
            start: 0,
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }

    /// Writes bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("send {} bytes: {e}", bytes.len()));
    }

    /// Writes `line` followed by `\n`.
    pub fn send_line(&mut self, line: &str) {
        self.try_send_line(line)
            .unwrap_or_else(|e| panic!("send a line of {} bytes: {e}", line.len()));
    }

    /// Writes `line` followed by `\n`, or says why it could not (the peer went away).
    pub fn try_send_line(&mut self, line: &str) -> std::io::Result<()> {
        let mut v = Vec::with_capacity(line.len() + 1);
        v.extend_from_slice(line.as_bytes());
        v.push(b'\n');
        self.stream.write_all(&v)
    }

    /// Writes a 4-byte big-endian length prefix and the payload.
    pub fn send_frame(&mut self, payload: &[u8]) {
        self.send(&frame(payload));
    }

    /// Closes our writing side (the server sees EOF).
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn consume(&mut self, n: usize) -> Vec<u8> {
        let out = self.buf[self.start..self.start + n].to_vec();
        self.start += n;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 1 << 20 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        out
    }

    /// One read() into the buffer, bounded by `deadline`. Ok(n) with n > 0, or an error.
    fn fill(&mut self, deadline: Instant) -> Result<usize, RecvError> {
        let now = Instant::now();
        if now >= deadline {
            return Err(RecvError::Timeout);
        }
        let wait = (deadline - now).max(Duration::from_millis(1));
        self.stream
            .set_read_timeout(Some(wait))
            .map_err(RecvError::Io)?;
        let mut chunk = [0u8; 65536];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(RecvError::Closed("EOF".into())),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_timeout(&e) => return Err(RecvError::Timeout),
                Err(e) if is_reset(&e) => return Err(RecvError::Closed(e.to_string())),
                Err(e) => return Err(RecvError::Io(e)),
            }
        }
    }

    /// Receives one `\n`-terminated line, returned as raw bytes including the `\n`.
    pub fn recv_line_bytes(&mut self, timeout: Duration) -> Result<Vec<u8>, RecvError> {
        let deadline = Instant::now() + timeout;
        let mut scanned = 0;
        loop {
            if let Some(i) = self.pending()[scanned..].iter().position(|&b| b == b'\n') {
                return Ok(self.consume(scanned + i + 1));
            }
            scanned = self.pending().len();
            self.fill(deadline)?;
        }
    }

    /// Receives one line, without its `\n` (a `\r` before it is kept).
    pub fn recv_line(&mut self, timeout: Duration) -> Result<String, RecvError> {
        let mut b = self.recv_line_bytes(timeout)?;
        b.pop();
        Ok(String::from_utf8_lossy(&b).into_owned())
    }

    /// Receives one line and panics unless it arrives within [`REPLY_TIMEOUT`] and equals
    /// `expected`.
    pub fn expect_line(&mut self, expected: &str) {
        match self.recv_line(REPLY_TIMEOUT) {
            Ok(l) => assert_eq!(l, expected, "unexpected reply line"),
            Err(e) => panic!("expected the line {expected:?}, got {e:?}"),
        }
    }

    /// Sends `line` and expects exactly `expected` back within [`REPLY_TIMEOUT`]; a failure
    /// names the line sent.
    pub fn roundtrip(&mut self, line: &str, expected: &str) {
        self.send_line(line);
        match self.recv_line(REPLY_TIMEOUT) {
            Ok(reply) => assert_eq!(reply, expected, "reply to {line:?}"),
            Err(e) => panic!("expected {expected:?} in reply to {line:?}, got {e:?}"),
        }
    }

    /// Receives a line, panicking on timeout/close.
    pub fn line(&mut self) -> String {
        self.recv_line(REPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("expected a reply line, got {e:?}"))
    }

    /// Receives exactly `n` bytes.
    pub fn recv_exact(&mut self, n: usize, timeout: Duration) -> Result<Vec<u8>, RecvError> {
        let deadline = Instant::now() + timeout;
        while self.pending().len() < n {
            self.fill(deadline)?;
        }
        Ok(self.consume(n))
    }

    /// Receives whatever arrives first (at least one byte).
    pub fn recv_some(&mut self, timeout: Duration) -> Result<Vec<u8>, RecvError> {
        let deadline = Instant::now() + timeout;
        if self.pending().is_empty() {
            self.fill(deadline)?;
        }
        let n = self.pending().len();
        Ok(self.consume(n))
    }

    /// Receives one length-prefixed frame; returns its payload.
    pub fn recv_frame(&mut self, timeout: Duration) -> Result<Vec<u8>, RecvError> {
        let deadline = Instant::now() + timeout;
        while self.pending().len() < 4 {
            self.fill(deadline)?;
        }
        let p = self.pending();
        let len = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize;
        assert!(
            len <= 256 << 20,
            "server sent an absurd frame length prefix {len:#x}"
        );
        while self.pending().len() < 4 + len {
            self.fill(deadline)?;
        }
        let mut f = self.consume(4 + len);
        f.drain(..4);
        Ok(f)
    }

    /// Reads until the server closes the connection; returns every byte received before that.
    /// Panics if the connection is still open after `timeout`.
    pub fn read_until_closed(&mut self, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.fill(deadline) {
                Ok(_) => continue,
                Err(RecvError::Closed(_)) => {
                    let n = self.pending().len();
                    return self.consume(n);
                }
                Err(RecvError::Timeout) => panic!(
                    "connection still open after {timeout:?} (received so far: {:?})",
                    String::from_utf8_lossy(self.pending())
                ),
                Err(RecvError::Io(e)) => panic!("read error while waiting for close: {e}"),
            }
        }
    }

    /// Panics unless the server closes the connection within `timeout` without sending anything.
    pub fn expect_closed_without_reply(&mut self, timeout: Duration) {
        let got = self.read_until_closed(timeout);
        assert!(
            got.is_empty(),
            "expected the connection to close without a reply, but received {:?}",
            String::from_utf8_lossy(&got)
        );
    }

    /// Panics if anything arrives, or the connection is closed, within `window`.
    pub fn expect_silence(&mut self, window: Duration) {
        if !self.pending().is_empty() {
            panic!(
                "expected silence, but already have {:?}",
                String::from_utf8_lossy(self.pending())
            );
        }
        match self.fill(Instant::now() + window) {
            Err(RecvError::Timeout) => {}
            Ok(_) => panic!(
                "expected nothing within {window:?}, but received {:?}",
                String::from_utf8_lossy(self.pending())
            ),
            Err(RecvError::Closed(why)) => {
                panic!("expected the connection to stay open, but it was closed ({why})")
            }
            Err(RecvError::Io(e)) => panic!("read error: {e}"),
        }
    }
}

/// A 4-byte big-endian length prefix followed by the payload.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + payload.len());
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Parses the `<id>` out of a lifecycle greeting `hello <id>`.
pub fn greeting_id(line: &str) -> u64 {
    line.strip_prefix("hello ")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("expected a greeting `hello <id>`, got {line:?}"))
}

/// A TCP connection to `to` from the local address `source` (port chosen by the kernel).
fn stream_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(to) = to else {
        panic!("the test server listens on IPv4");
    };
    let addr = |ip: [u8; 4], port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor this function owns until it is wrapped.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let from = addr(source, 0);
        let rc = libc::bind(fd, (&from as *const libc::sockaddr_in).cast(), len);
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let dest = addr(to.ip().octets(), to.port());
        let rc = libc::connect(fd, (&dest as *const libc::sockaddr_in).cast(), len);
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    }
}
