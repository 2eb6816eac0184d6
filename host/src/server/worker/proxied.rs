//! `--proxy-protocol` on a worker: the connections whose PROXY header is still being read. A
//! connection is opened (`on-connect`, the `connection opened` line, the per-IP count, the
//! messaging registry) only once its header is whole, under the client's address from it; a
//! missing, bad, late or untrusted header closes it before any plugin hears of it.
//!
//! Only the header's bytes are taken off the socket: each read is peeked first and just the
//! bytes the header needs are consumed, so what the client sent after it is left for the
//! framing, and the connection's own buffers never see the header.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Token};
use slab::Slab;

use super::super::acceptor::NewConn;
use super::super::handler::Handler;
use super::super::proxy_header::{self, Header, Parsed, MAX_HEADER};
use super::super::stats::Close;
use super::Worker;

/// Waiting connections' tokens start here (their slab key added), far above any session's.
pub(super) const FIRST_TOKEN: usize = usize::MAX / 2;
/// A proxy sends its header as soon as it connects; a peer that takes longer than this (or
/// `--message-timeout`, if shorter) is not behaving like one.
const HEADER_DEADLINE: Duration = Duration::from_secs(10);
/// Bytes peeked at a time: a whole v1 header, or most v2 ones.
const CHUNK: usize = 512;

/// Refusals of untrusted peers are logged at most this often per worker, with a count: anyone
/// who can reach the port can make them, so a flood of them must not flood the log too.
const UNTRUSTED_LOG_EVERY: Duration = Duration::from_secs(1);

/// The connections waiting for their header, keyed by token minus [`FIRST_TOKEN`].
#[derive(Default)]
pub(super) struct Waiting {
    slab: Slab<Pending>,
    /// When an untrusted peer's refusal was last logged, and how many were not since.
    untrusted_logged: Option<Instant>,
    untrusted_unlogged: u64,
}

struct Pending {
    stream: TcpStream,
    id: u64,
    /// The socket's peer: the proxy.
    proxy: SocketAddr,
    /// The header's bytes so far (all consumed from the socket).
    header: Vec<u8>,
    since: Instant,
}

/// Where reading a header got to.
enum Step {
    Wait,
    Done(Header),
    Fail(Close, String),
}

impl<H: Handler> Worker<H> {
    /// Takes a new connection: refused at once unless its peer is a trusted proxy, otherwise
    /// watched until its header is read.
    pub(super) fn await_header(&mut self, nc: NewConn) {
        let NewConn { mut stream, id, .. } = nc;
        let proxy = match stream.peer_addr() {
            Ok(a) => a,
            Err(e) => return self.refuse(id, None, Close::ClientGone, &e.to_string()),
        };
        if self.draining.is_some() {
            return self.refuse(id, Some(proxy), Close::NotServed, "shutting down");
        }
        let trusted = &self.shared.config.trusted_proxies;
        if !trusted.iter().any(|block| block.contains(proxy.ip())) {
            let w = &mut self.waiting;
            w.untrusted_unlogged += 1;
            if w.untrusted_logged
                .is_some_and(|t| self.now.duration_since(t) < UNTRUSTED_LOG_EVERY)
            {
                return self.forget(1, 0, Close::ProxyUntrusted);
            }
            let why = format!(
                "its address is not in --trusted-proxies ({} untrusted since the last such line)",
                w.untrusted_unlogged
            );
            (w.untrusted_logged, w.untrusted_unlogged) = (Some(self.now), 0);
            return self.refuse(id, Some(proxy), Close::ProxyUntrusted, &why);
        }
        let entry = self.waiting.slab.vacant_entry();
        let token = Token(FIRST_TOKEN + entry.key());
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, token, Interest::READABLE)
        {
            return self.refuse(id, Some(proxy), Close::NotServed, &e.to_string());
        }
        entry.insert(Pending {
            stream,
            id,
            proxy,
            header: Vec::new(),
            since: self.now,
        });
        // The header may have arrived with the connection: no event will say so again.
        self.read_header(token.0);
    }

    /// Reads what the header's connection sent; once the header is whole, opens the connection
    /// under the client's address.
    pub(super) fn read_header(&mut self, token: usize) {
        let key = token - FIRST_TOKEN;
        let Some(pending) = self.waiting.slab.get_mut(key) else {
            return;
        };
        let outcome = match pending.read() {
            Step::Wait => return,
            Step::Done(header) => Ok(header),
            Step::Fail(reason, why) => Err((reason, why)),
        };
        let mut p = self.waiting.slab.remove(key);
        let _ = self.poll.registry().deregister(&mut p.stream);
        let header = match outcome {
            Ok(header) => header,
            Err((reason, why)) => return self.refuse(p.id, Some(p.proxy), reason, &why),
        };
        let client = match header {
            Header::Proxied { source, .. } => source,
            // A health check, or a family the header does not describe: the proxy stays.
            Header::Local | Header::Unknown => p.proxy,
        };
        tracing::debug!(conn = p.id, proxy = %p.proxy, %client, ?header, "PROXY header read");
        // The acceptor did not count the proxy's address; the client's is counted from now on.
        let limit = self.shared.config.max_connections_per_ip;
        if !self.shared.per_ip.admit(client.ip(), limit) {
            let why = format!(
                "--max-connections-per-ip {limit} reached for {}",
                client.ip()
            );
            return self.refuse(p.id, Some(client), Close::PerIpLimit, &why);
        }
        let nc = NewConn {
            stream: p.stream,
            id: p.id,
            ip: Some(client.ip()),
        };
        self.admit(nc, Some(client));
    }

    /// Closes the connections whose header is not whole by its deadline.
    pub(super) fn expire_headers(&mut self) {
        let limit = self
            .timeouts
            .message
            .map_or(HEADER_DEADLINE, |t| t.min(HEADER_DEADLINE));
        let now = Instant::now();
        let late: Vec<usize> = self
            .waiting
            .slab
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.since) > limit)
            .map(|(key, _)| key)
            .collect();
        for key in late {
            let mut p = self.waiting.slab.remove(key);
            let _ = self.poll.registry().deregister(&mut p.stream);
            let why = format!("no whole PROXY header within {limit:?}");
            self.refuse(p.id, Some(p.proxy), Close::ProxyHeaderTimeout, &why);
        }
    }

    /// Shutdown: a connection still without its header never reached a plugin; it just closes.
    pub(super) fn abandon_headers(&mut self) {
        for (_, mut p) in std::mem::take(&mut self.waiting.slab) {
            let _ = self.poll.registry().deregister(&mut p.stream);
            self.refuse(p.id, Some(p.proxy), Close::NotServed, "shutting down");
        }
    }

    /// Logs and counts a connection closed before it was opened (its stream is dropped already
    /// or right after: either way the client sees the close).
    pub(super) fn refuse(&mut self, id: u64, peer: Option<SocketAddr>, reason: Close, why: &str) {
        let peer = peer.map_or_else(|| "unknown".into(), |a| a.to_string());
        let (text, message) = (reason.text(), "connection closed before it was opened");
        match reason {
            // Ordinary ends (HAProxy's plain TCP checks connect and reset at once): the level
            // of any `connection closed` line.
            Close::ClientGone | Close::NotServed => {
                tracing::info!(conn = id, %peer, reason = text, "{message}: {why}");
            }
            _ => tracing::warn!(conn = id, %peer, reason = text, "{message}: {why}"),
        }
        self.forget(1, 0, reason);
    }
}

impl Pending {
    /// Takes the header's bytes off the socket, and no others.
    fn read(&mut self) -> Step {
        let mut chunk = [0; CHUNK];
        loop {
            // `parse` decides any MAX_HEADER bytes, so there is always room here.
            let want = (MAX_HEADER - self.header.len()).min(CHUNK);
            let n = match self.stream.peek(&mut chunk[..want]) {
                Ok(0) if self.header.is_empty() => {
                    let why = "the client closed without sending a PROXY header";
                    return Step::Fail(Close::ProxyHeaderInvalid, why.into());
                }
                Ok(0) => {
                    let why = "the client closed in the middle of its PROXY header";
                    return Step::Fail(Close::ProxyHeaderInvalid, why.into());
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Step::Fail(Close::ClientGone, e.to_string()),
            };
            let before = self.header.len();
            self.header.extend_from_slice(&chunk[..n]);
            let (step, take) = match proxy_header::parse(&self.header) {
                // Every byte so far is the header's: take them all, and peek again.
                Ok(Parsed::Incomplete) => (None, n),
                Ok(Parsed::Complete { header, len }) => (Some(Step::Done(header)), len - before),
                Err(e) => return Step::Fail(Close::ProxyHeaderInvalid, e.to_string()),
            };
            // Peeked bytes are in the socket's queue, so reading them cannot block.
            if let Err(e) = self.stream.read_exact(&mut chunk[..take]) {
                return Step::Fail(Close::ClientGone, e.to_string());
            }
            if let Some(step) = step {
                return step;
            }
        }
    }
}
