//! `--tls-cert` on a worker: the connections whose TLS handshake is still going on, driven by
//! the worker's own event loop (no thread of their own). A connection is opened (`on-connect`,
//! the `connection opened` line, the messaging registry) only once its handshake is done; one
//! that fails it (not TLS, an untrusted or missing client certificate, an alert from a client
//! that does not trust us, the deadline) is closed, logged and counted before any plugin hears
//! of it. With `--proxy-protocol` the PROXY header comes first, in clear, and then this.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Token};
use rustls::{ServerConfig, ServerConnection};
use slab::Slab;

use super::super::acceptor::NewConn;
use super::super::handler::Handler;
use super::super::stats::Close;
use super::super::tls::{self, HandshakeFailure};
use super::Worker;

/// Handshaking connections' tokens start here (their slab key added): above any session's,
/// below [`super::proxied::FIRST_TOKEN`].
pub(super) const FIRST_TOKEN: usize = usize::MAX / 4;
/// A client starts and finishes its handshake at once; one that takes longer than this (or
/// `--message-timeout`, if shorter) holds a slot of `--max-connections` for nothing.
const DEADLINE: Duration = Duration::from_secs(10);
/// Failed handshakes are logged at most this often per worker, with a count: anyone who can
/// reach the port can make them, so a flood of them must not flood the log too.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(1);

/// The connections in their handshake, keyed by token minus [`FIRST_TOKEN`].
#[derive(Default)]
pub(super) struct Handshakes {
    slab: Slab<Shaking>,
    logged: Option<Instant>,
    unlogged: u64,
}

struct Shaking {
    stream: TcpStream,
    tls: ServerConnection,
    id: u64,
    /// Counted in `--max-connections-per-ip` (given back if the handshake fails).
    ip: Option<std::net::IpAddr>,
    /// The client's address (from a PROXY header, or the socket's peer).
    peer: Option<SocketAddr>,
    /// Whether `peer` came from a PROXY header (then `open` must be told).
    proxied: bool,
    since: Instant,
}

/// A handshake that is over: the session to serve on, and the verified client certificate's
/// subject under mutual TLS.
pub(super) struct Established {
    pub tls: ServerConnection,
    pub subject: Option<String>,
}

/// Where a handshake got to.
enum Step {
    Wait,
    Done,
    Fail(HandshakeFailure, String),
}

impl<H: Handler> Worker<H> {
    /// Takes a connection whose TLS handshake must come first; `client` is the address of its
    /// PROXY header, if it had one.
    pub(super) fn begin_handshake(
        &mut self,
        nc: NewConn,
        client: Option<SocketAddr>,
        config: Arc<ServerConfig>,
    ) {
        let NewConn { mut stream, id, ip } = nc;
        let peer = client.or_else(|| stream.peer_addr().ok());
        if self.draining.is_some() {
            // It would not be served: a handshake only to close it would be wasted.
            self.shared.per_ip.release(ip);
            return self.refuse(id, peer, Close::NotServed, "shutting down");
        }
        let tls = match ServerConnection::new(config) {
            Ok(tls) => tls,
            Err(e) => {
                self.shared.per_ip.release(ip);
                return self.refuse(id, peer, Close::NotServed, &e.to_string());
            }
        };
        let entry = self.handshakes.slab.vacant_entry();
        let token = Token(FIRST_TOKEN + entry.key());
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self.poll.registry().register(&mut stream, token, interest) {
            self.shared.per_ip.release(ip);
            return self.refuse(id, peer, Close::NotServed, &e.to_string());
        }
        entry.insert(Shaking {
            stream,
            tls,
            id,
            ip,
            peer,
            proxied: client.is_some(),
            since: self.now,
        });
        // The ClientHello may have arrived with the connection: no event will say so again.
        self.shake(token.0);
    }

    /// Moves a handshake on; once it is done, opens the connection.
    pub(super) fn shake(&mut self, token: usize) {
        let key = token - FIRST_TOKEN;
        let Some(s) = self.handshakes.slab.get_mut(key) else {
            return;
        };
        let outcome = match s.step() {
            Step::Wait => return,
            Step::Done => None,
            Step::Fail(why, detail) => Some((why, detail)),
        };
        let mut s = self.handshakes.slab.remove(key);
        let _ = self.poll.registry().deregister(&mut s.stream);
        if let Some((why, detail)) = outcome {
            return self.handshake_failed(s, why, &detail);
        }
        let subject = (s.tls.peer_certificates())
            .and_then(|chain| chain.first())
            .and_then(tls::subject);
        self.shared.stats.tls_handshake_done();
        tracing::debug!(
            conn = s.id,
            version = ?s.tls.protocol_version(),
            suite = ?s.tls.negotiated_cipher_suite().map(|c| c.suite()),
            "TLS handshake done"
        );
        let nc = NewConn {
            stream: s.stream,
            id: s.id,
            ip: s.ip,
        };
        let client = s.peer.filter(|_| s.proxied);
        let tls = Established {
            tls: s.tls,
            subject,
        };
        self.open(nc, client, Some(tls));
    }

    /// Closes the handshakes not done by their deadline.
    pub(super) fn expire_handshakes(&mut self) {
        let limit = self.timeouts.message.map_or(DEADLINE, |t| t.min(DEADLINE));
        let now = Instant::now();
        let late: Vec<usize> = (self.handshakes.slab.iter())
            .filter(|(_, s)| now.saturating_duration_since(s.since) > limit)
            .map(|(key, _)| key)
            .collect();
        for key in late {
            let mut s = self.handshakes.slab.remove(key);
            let _ = self.poll.registry().deregister(&mut s.stream);
            let why = format!("not done within {limit:?}");
            self.handshake_failed(s, HandshakeFailure::Timeout, &why);
        }
    }

    /// Shutdown: a connection still in its handshake never reached a plugin; it just closes.
    pub(super) fn abandon_handshakes(&mut self) {
        for (_, mut s) in std::mem::take(&mut self.handshakes.slab) {
            let _ = self.poll.registry().deregister(&mut s.stream);
            self.shared.per_ip.release(s.ip);
            self.refuse(s.id, s.peer, Close::NotServed, "shutting down");
        }
    }

    /// Counts a failed handshake and closes its connection; logs it, at most once a second.
    fn handshake_failed(&mut self, s: Shaking, why: HandshakeFailure, detail: &str) {
        self.shared.per_ip.release(s.ip);
        self.shared.stats.tls_handshake_failed(why);
        let reason = match why {
            HandshakeFailure::Timeout => Close::TlsHandshakeTimeout,
            _ => Close::TlsHandshakeFailed,
        };
        let h = &mut self.handshakes;
        h.unlogged += 1;
        if h.logged
            .is_some_and(|t| self.now.duration_since(t) < FAILURE_LOG_EVERY)
        {
            return self.forget(1, 0, reason);
        }
        let peer = s.peer.map_or_else(|| "unknown".into(), |a| a.to_string());
        tracing::warn!(
            conn = s.id,
            %peer,
            reason = reason.text(),
            failure = why.label(),
            failed_since_last_line = h.unlogged - 1,
            "TLS handshake failed: {detail}"
        );
        (h.logged, h.unlogged) = (Some(self.now), 0);
        self.forget(1, 0, reason);
    }
}

impl Shaking {
    /// Writes what rustls has to send, reads what the client sent, until the handshake is over
    /// or waits on the socket.
    fn step(&mut self) -> Step {
        loop {
            while self.tls.wants_write() {
                match self.tls.write_tls(&mut self.stream) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Step::Fail(HandshakeFailure::Closed, e.to_string()),
                }
            }
            if !self.tls.is_handshaking() {
                // Records still unsent (TLS 1.3 tickets) go out with the first reply.
                return Step::Done;
            }
            match self.tls.read_tls(&mut self.stream) {
                Ok(0) => {
                    let why = "the client closed during the handshake";
                    return Step::Fail(HandshakeFailure::Closed, why.into());
                }
                Ok(_) => {
                    if let Err(e) = self.tls.process_new_packets() {
                        // The alert rustls queued tells the client why; then close.
                        let _ = self.tls.write_tls(&mut self.stream);
                        return Step::Fail(HandshakeFailure::of(&e), e.to_string());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Step::Fail(HandshakeFailure::Closed, e.to_string()),
            }
        }
    }
}
