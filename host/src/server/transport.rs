//! What a connection's bytes travel over: the socket itself, or a TLS session on it (rustls's
//! `ServerConnection`, its handshake already done). [`Connection`](super::connection) reads
//! and writes the decrypted stream through it, so framing and every limit apply to that.
//!
//! Non-blocking throughout: a read that needs more TLS records and finds none is `WouldBlock`,
//! and so is a write rustls has no room to buffer (its limit is `set_buffer_limit`'s, 64 KiB by
//! default) while the socket takes nothing. The socket is registered for readable and
//! writable edges for its whole life, so the worker is woken whenever records still waiting
//! in rustls can move: it then calls [`Transport::push`] (through `Connection::flush`).

use std::io::{self, Read, Write};

use mio::net::TcpStream;
use rustls::ServerConnection;

pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

/// A TLS session and the socket it runs on.
pub struct TlsStream {
    tcp: TcpStream,
    tls: ServerConnection,
}

impl Transport {
    pub fn plain(tcp: TcpStream) -> Self {
        Transport::Plain(tcp)
    }

    /// A session whose handshake is over (see `worker/handshake.rs`).
    pub fn tls(tcp: TcpStream, tls: ServerConnection) -> Self {
        Transport::Tls(Box::new(TlsStream { tcp, tls }))
    }

    pub fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(tcp) => tcp,
            Transport::Tls(s) => &s.tcp,
        }
    }

    pub fn tcp_mut(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(tcp) => tcp,
            Transport::Tls(s) => &mut s.tcp,
        }
    }

    /// Reads decrypted bytes; `Ok(0)` at the end of the client's stream (a TLS close_notify,
    /// or the socket's EOF).
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(tcp) => tcp.read(buf),
            Transport::Tls(s) => s.read(buf),
        }
    }

    /// Takes bytes to send; `WouldBlock` when neither the socket nor rustls's buffer has room.
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(tcp) => tcp.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }

    /// Writes TLS records rustls holds to the socket, as far as it takes them; whether any
    /// bytes went out. Nothing to do on a plain socket.
    pub fn push(&mut self) -> io::Result<bool> {
        match self {
            Transport::Plain(_) => Ok(false),
            Transport::Tls(s) => s.push(),
        }
    }

    /// Whether bytes accepted by [`Transport::write`] still wait to reach the socket.
    pub fn holds_output(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(s) => s.tls.wants_write(),
        }
    }

    /// Ends a TLS session properly (close_notify), as far as the socket takes it now: the
    /// connection is closing, and a client must be able to tell its end from a truncation.
    pub fn close_notify(&mut self) {
        if let Transport::Tls(s) = self {
            s.tls.send_close_notify();
            let _ = s.push();
        }
    }
}

impl TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                // Ok(0): the client's close_notify.
                Ok(n) => return Ok(n),
                // Nothing decrypted is waiting: read records.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The socket ended without a close_notify: still the end of the stream.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            match self.tls.read_tls(&mut self.tcp) {
                Ok(0) => return Ok(0),
                Ok(_) => {
                    if let Err(e) = self.tls.process_new_packets() {
                        // Tell the client why (rustls queued an alert), then fail.
                        let _ = self.push();
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                    // Key updates and the like answer at once.
                    self.push()?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.push()?;
        let n = self.tls.writer().write(buf)?;
        self.push()?;
        if n == 0 && !buf.is_empty() {
            // rustls's buffer is full and the socket takes nothing: wait for a writable edge.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn push(&mut self) -> io::Result<bool> {
        let mut wrote = false;
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.tcp) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => wrote = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(wrote)
    }
}
