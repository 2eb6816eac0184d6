//! The acceptor thread: takes new clients off the listener, enforces `--max-connections` and
//! `--max-connections-per-ip`, and hands each connection to the least loaded worker.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crossbeam_channel::Sender;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::Shared;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Refusals are logged at most this often, with a count, so a flood cannot flood the log too.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(1);
/// The listen backlog of `Server::bind` (mio's, and ours with `--reuse-port`).
pub const BACKLOG: usize = 1024;
/// Pause after the process ran out of file descriptors, instead of spinning on accept.
const FD_BACKOFF: Duration = Duration::from_millis(20);

/// A new connection for a worker.
pub struct NewConn {
    pub stream: TcpStream,
    pub id: u64,
    /// Counted in `--max-connections-per-ip` until the connection ends. `None` with
    /// `--proxy-protocol`: the peer is the proxy, and the client is known from the header only.
    pub ip: Option<IpAddr>,
}

/// Open connections per client address, for `--max-connections-per-ip`: taken by the acceptor,
/// given back by the worker that ends the connection.
#[derive(Default)]
pub struct PerIp(Mutex<HashMap<IpAddr, usize>>);

impl PerIp {
    /// Counts one more connection from `ip` unless `limit` (0: none) are open already.
    pub(super) fn admit(&self, ip: IpAddr, limit: usize) -> bool {
        if limit == 0 {
            // Not counted at all: then `release` finds nothing to give back either.
            return true;
        }
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_default();
        if limit > 0 && *n >= limit {
            return false;
        }
        *n += 1;
        true
    }

    /// A connection from `ip` ended (`None`: it was never counted).
    pub fn release(&self, ip: Option<IpAddr>) {
        let Some(ip) = ip else {
            return;
        };
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&ip);
            }
        }
    }
}

/// How the acceptor reaches one worker.
pub struct Inbox {
    pub tx: Sender<NewConn>,
    pub waker: Arc<Waker>,
}

pub struct Acceptor {
    poll: Poll,
    listener: TcpListener,
    waker: Arc<Waker>,
    inboxes: Vec<Inbox>,
    shared: Arc<Shared>,
    next_id: u64,
    refused_since_log: u64,
    last_refusal_log: Option<Instant>,
}

impl Acceptor {
    pub fn new(
        mut listener: TcpListener,
        inboxes: Vec<Inbox>,
        shared: Arc<Shared>,
        first_id: u64,
    ) -> anyhow::Result<Self> {
        let poll = Poll::new().context("cannot create the acceptor's event loop")?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .context("cannot watch the listening socket")?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).context("cannot create a waker")?);
        Ok(Acceptor {
            poll,
            listener,
            waker,
            inboxes,
            shared,
            next_id: first_id,
            refused_since_log: 0,
            last_refusal_log: None,
        })
    }

    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(64);
        while !self.shared.shutdown.is_triggered() {
            if let Err(e) = self.poll.poll(&mut events, None) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!("acceptor event loop failed: {e}");
                    self.shared.shutdown.trigger();
                }
                continue;
            }
            // Listener readiness, or our own wake after a pause: either way, drain the queue.
            self.accept_all();
        }
        self.take_the_queue();
        // Dropping the listener here makes new clients see a refused connection at once (or,
        // with `--reuse-port`, go to the other servers on the address).
        drop(self.listener);
        self.shared.accepting.store(false, SeqCst);
        for inbox in &self.inboxes {
            let _ = inbox.waker.wake();
        }
    }

    /// At shutdown: the connections the kernel completed but nobody accepted yet are taken and
    /// served in the drain, since closing the listener would reset them. Their clients already
    /// saw `connect` succeed (and, during a `--reuse-port` upgrade, the kernel keeps giving this
    /// listener its share of new clients until it is closed): lost otherwise.
    fn take_the_queue(&mut self) {
        let mut taken = 0;
        // Bounded, as a flood could keep the queue from ever being empty: a full backlog twice.
        for _ in 0..2 * BACKLOG {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    taken += 1;
                    self.admit(stream, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                // Empty, or out of descriptors: nothing more can be taken.
                Err(_) => break,
            }
        }
        if taken > 0 {
            tracing::info!(
                connections = taken,
                "served in the drain: queued at shutdown"
            );
        }
    }

    fn accept_all(&mut self) {
        loop {
            if self.shared.shutdown.is_triggered() {
                // `run` takes what is left, once, on its way out.
                return;
            }
            match self.listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    tracing::warn!("out of file descriptors, pausing accept: {e}");
                    std::thread::sleep(FD_BACKOFF);
                    return self.rearm();
                }
                // A client that gave up before we took it; nothing to do.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    std::thread::sleep(FD_BACKOFF);
                    return self.rearm();
                }
            }
        }
    }

    /// Edge-triggered readiness will not fire again for clients already queued: ask again.
    fn rearm(&mut self) {
        let _ = self.waker.wake();
    }

    fn admit(&mut self, stream: TcpStream, peer: std::net::SocketAddr) {
        let cfg = &self.shared.config;
        let refusal = if self.shared.stats.open.load(Relaxed) >= cfg.max_connections {
            Some(format!("--max-connections {} reached", cfg.max_connections))
        } else if !cfg.proxy_protocol
            && !self
                .shared
                .per_ip
                .admit(peer.ip(), cfg.max_connections_per_ip)
        {
            Some(format!(
                "--max-connections-per-ip {} reached for {}",
                cfg.max_connections_per_ip,
                peer.ip()
            ))
        } else {
            None
        };
        if let Some(why) = refusal {
            self.shared.stats.refused();
            self.refused_since_log += 1;
            let now = Instant::now();
            if self
                .last_refusal_log
                .is_none_or(|t| now.duration_since(t) >= REFUSAL_LOG_EVERY)
            {
                tracing::warn!(
                    %peer,
                    refused = self.refused_since_log,
                    "connection refused: {why}"
                );
                self.refused_since_log = 0;
                self.last_refusal_log = Some(now);
            }
            // Dropping the stream closes it: the client sees EOF at once.
            return;
        }
        self.shared.stats.accepted();
        let _ = stream.set_nodelay(true);
        let id = self.next_id;
        self.next_id += 1;
        let (index, _) = self
            .shared
            .per_worker
            .iter()
            .enumerate()
            .min_by_key(|(_, n)| n.load(Relaxed))
            .expect("at least one worker");
        self.shared.per_worker[index].fetch_add(1, Relaxed);
        let inbox = &self.inboxes[index];
        let ip = (!cfg.proxy_protocol).then_some(peer.ip());
        if inbox.tx.send(NewConn { stream, id, ip }).is_ok() {
            let _ = inbox.waker.wake();
        } else {
            // The worker is gone (shutting down, or dead); the stream was dropped with the
            // message.
            self.shared.per_worker[index].fetch_sub(1, Relaxed);
            self.shared.per_ip.release(ip);
            self.shared
                .stats
                .closed(1, 0, super::stats::Close::NotServed);
        }
    }
}
